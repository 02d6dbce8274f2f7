"""The receiver's status port: /health and /metrics over real HTTP, with real associations (pynetdicom as
the modality), a real receiver thread, and its trigger thread stopped to see /health turn 503."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from clara_airflow.dicom import listen as receiver_module
from clara_airflow.dicom.trigger import Triggers
from clara_airflow.errors import ClaraAirflowError
from tests.dicom_data import ct_series
from tests.unit.dicom.test_receiver import FakeAirflow, Running, config, free_port, send, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "s3cret-token-of-the-probe"


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
def watched(tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", TOKEN)
    port = free_port()
    cfg = config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                            "status_port": port})
    running = Running(cfg)
    wait_for(lambda: get(port, "/health")[0] == 200)
    yield running, port
    running.close()


def test_health_and_metrics_follow_what_the_receiver_did(watched: Any, tmp_path: Path, airflow: FakeAirflow) -> None:
    running, port = watched
    study = generate_uid()
    assert send(running.cfg, ct_series(tmp_path / "s", study=study, series=generate_uid(), count=3)) == [0, 0, 0]
    assert not hasattr(send(running.cfg, [], calling="STRANGER"), "__len__"), "a stranger is refused"
    wait_for(lambda: len(airflow.runs) == 2, 10)
    status, body = get(port, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["checks"] == {"scp": True, "triggers": True}
    assert health["triggers"] == {"pending": [], "failed": []} and health["disk"]["free_mb"] > 0
    status, text = get(port, "/metrics")
    assert status == 200
    assert metric(text, "clara_dicom_instances_stored_total") == 3
    assert metric(text, "clara_dicom_bytes_received_total") > 3 * 32 * 32 * 2
    assert metric(text, "clara_dicom_groups_completed_total") == 1 == metric(text, "clara_dicom_groups_routed_total")
    assert metric(text, "clara_dicom_triggers_sent_total") == 2
    assert 'clara_dicom_associations_refused_total{reason="source"} 1.0' in text
    assert metric(text, "clara_dicom_groups_pending") == 0 and metric(text, "clara_dicom_disk_free_bytes") > 0
    assert all(line.startswith(("# HELP clara_dicom_", "# TYPE clara_dicom_", "clara_dicom_"))
               for line in text.splitlines() if line)


def test_every_route_needs_the_token(watched: Any) -> None:
    _, port = watched
    for path in ("/health", "/metrics", "/other"):
        assert get(port, path, token=None)[0] == 401
        assert get(port, path, token="wrong-token-of-same-size!")[0] == 401
    assert get(port, "/other")[0] == 404


def test_health_turns_503_when_the_trigger_thread_is_gone(tmp_path: Path, airflow: FakeAirflow,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", TOKEN)
    ended = threading.Event()

    def dies(self: Triggers, stop: threading.Event) -> None:  # the thread ends, as an uncaught error would end it
        ended.wait(10)

    monkeypatch.setattr(Triggers, "run", dies)
    port = free_port()
    running = Running(config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                                        "status_port": port}))
    try:
        assert wait_for(lambda: get(port, "/health")[0] == 200)
        ended.set()
        wait_for(lambda: get(port, "/health")[0] == 503)
        body = json.loads(get(port, "/health")[1])
        assert body["status"] == "unhealthy" and body["checks"] == {"scp": True, "triggers": False}
    finally:
        running.close()


def test_no_status_port_without_a_token(tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", "short")
    cfg = config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                            "status_port": free_port()})
    stop, raised = threading.Event(), []

    def start() -> None:
        try:
            receiver_module.serve(cfg, stop=stop)
        except ClaraAirflowError as exc:
            raised.append(str(exc))

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(5)
    stop.set()  # a receiver that started anyway is stopped: the test fails, it does not hang
    thread.join(10)
    assert raised and "CLARA_DICOM_STATUS_TOKEN (listen.status_token_env) does not hold a token of at least 16" in raised[0]
