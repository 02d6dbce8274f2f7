"""The status port's contract, exactly: each refusal's ``reason`` label from the receiver's own refusal
texts, the whole ``/metrics`` exposition (names, help, types, labels, values), the 401 answer, and where
the port announces itself."""

from __future__ import annotations

import logging
import shutil
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.dicom.health import StatusServer, collector, refusal_reason, start_status
from clara_airflow.dicom.receiver import Receiver
from tests.unit.dicom.test_receiver import FakeAirflow, config, free_port

TOKEN = "a-token-of-at-least-16"


def test_each_refusal_of_the_receiver_gets_its_reason(tmp_path: Path, airflow: FakeAirflow,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rx = Receiver(config(tmp_path, airflow, min_free_disk_mb=10, max_associations=1))
    reason = lambda *args: refusal_reason(rx.refusal(*args)[0])  # type: ignore[index]  # noqa: E731
    assert reason("MODALITY", "127.0.0.1", "NOBODY") == "called_ae"
    assert reason("STRANGER", "127.0.0.1", "CT_AI") == "source"
    rx._open[1] = object()  # type: ignore[assignment]  # one association open: the limit
    assert reason("MODALITY", "127.0.0.1", "CT_AI") == "associations"
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**13, 0, 0))  # type: ignore[attr-defined]
    assert reason("MODALITY", "127.0.0.1", "CT_AI") == "disk"
    assert refusal_reason("something new") == "other"


class FakeReceiver:
    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.counts = Counter({"instances": 7, "bytes": 7340032, "completed": 2, "routed": 1, "unrouted": 1,
                               "refused:called_ae": 1, "refused:source": 2, "refused:disk": 3,
                               "refused:associations": 4, "refused:other": 5})
        self.triggers = type("T", (), {"counts": Counter({"sent": 3, "failed": 1, "retried": 6}),
                                       "pending": staticmethod(lambda: [{}, {}])})()

    def pending_groups(self) -> int:
        return 4


EXPOSITION = """\
# HELP clara_dicom_instances_stored_total instances written to disk and acknowledged
# TYPE clara_dicom_instances_stored_total counter
clara_dicom_instances_stored_total 7.0
# HELP clara_dicom_bytes_received_total bytes of acknowledged instances
# TYPE clara_dicom_bytes_received_total counter
clara_dicom_bytes_received_total 7.340032e+06
# HELP clara_dicom_groups_completed_total groups moved into the inbox with their runs
# TYPE clara_dicom_groups_completed_total counter
clara_dicom_groups_completed_total 2.0
# HELP clara_dicom_groups_routed_total complete groups that started at least one run
# TYPE clara_dicom_groups_routed_total counter
clara_dicom_groups_routed_total 1.0
# HELP clara_dicom_groups_unrouted_total complete groups no rule routed (kept, no run)
# TYPE clara_dicom_groups_unrouted_total counter
clara_dicom_groups_unrouted_total 1.0
# HELP clara_dicom_triggers_sent_total runs started in Airflow (or found existing)
# TYPE clara_dicom_triggers_sent_total counter
clara_dicom_triggers_sent_total 3.0
# HELP clara_dicom_triggers_failed_total runs Airflow refused for good (400/403/404/422)
# TYPE clara_dicom_triggers_failed_total counter
clara_dicom_triggers_failed_total 1.0
# HELP clara_dicom_triggers_retried_total sends that failed and will be tried again
# TYPE clara_dicom_triggers_retried_total counter
clara_dicom_triggers_retried_total 6.0
# HELP clara_dicom_associations_refused_total associations refused, by reason
# TYPE clara_dicom_associations_refused_total counter
clara_dicom_associations_refused_total{reason="called_ae"} 1.0
clara_dicom_associations_refused_total{reason="source"} 2.0
clara_dicom_associations_refused_total{reason="disk"} 3.0
clara_dicom_associations_refused_total{reason="associations"} 4.0
clara_dicom_associations_refused_total{reason="other"} 5.0
# HELP clara_dicom_groups_pending groups still gathering
# TYPE clara_dicom_groups_pending gauge
clara_dicom_groups_pending 4.0
# HELP clara_dicom_triggers_pending runs waiting to be started in Airflow
# TYPE clara_dicom_triggers_pending gauge
clara_dicom_triggers_pending 2.0
# HELP clara_dicom_disk_free_bytes free space of the inbox's filesystem
# TYPE clara_dicom_disk_free_bytes gauge
clara_dicom_disk_free_bytes 1.048576e+06
"""


def test_the_whole_metrics_exposition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**13, 0, 2**20))  # type: ignore[attr-defined]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(FakeReceiver(tmp_path)))
    assert generate_latest(registry).decode() == EXPOSITION


def test_the_401_answer_says_what_is_needed(tmp_path: Path) -> None:
    server = StatusServer("127.0.0.1", 0, TOKEN, FakeReceiver(tmp_path), lambda: {"scp": True}, dict)
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert info.value.code == 401
        assert info.value.headers["WWW-Authenticate"] == "Bearer"
        assert info.value.headers["Content-Type"] == "application/json"
        assert info.value.read() == b'{"error": "a bearer token is required (listen.status_token_env)"}'
    finally:
        server.close()


def test_the_port_announces_itself_on_the_receivers_logger(tmp_path: Path, airflow: FakeAirflow,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", TOKEN)
    port = free_port()
    cfg = config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                            "status_port": port})
    caplog.set_level(logging.INFO, logger="clara_airflow.dicom")
    server = start_status(cfg, Receiver(cfg), threading.Thread(target=lambda: None))
    assert server is not None
    try:
        assert [(r.name, r.getMessage()) for r in caplog.records] == [
            ("clara_airflow.dicom", f"status port: http://127.0.0.1:{port}/health and /metrics")]
    finally:
        server.close()


def _get(port: int, path: str) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_each_route_answers_with_its_type_and_length(tmp_path: Path, airflow: FakeAirflow,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a running SCP the status port says so (503); the facts never ask Airflow."""
    import json

    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", TOKEN)
    cfg = config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                            "status_port": free_port()})
    sender = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
    sender.start()
    server = start_status(cfg, Receiver(cfg), sender)
    assert server is not None
    try:
        assert server.thread.name == "clara-status" and server.thread.daemon and server.server.daemon_threads
        code, headers, body = _get(server.port, "/health")
        scp = any(t.name.startswith("AcceptorServer@") and t.is_alive() for t in threading.enumerate())  # a leak
        assert code == (200 if scp else 503) and headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == str(len(body))
        health = json.loads(body)
        assert health["checks"] == {"scp": scp, "triggers": True} and "dags" not in health
        code, headers, body = _get(server.port, "/metrics")
        assert code == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        code, headers, body = _get(server.port, "/elsewhere")
        assert (code, headers["Content-Type"], body) == (404, "application/json", b'{"error": "GET /health or /metrics"}')
    finally:
        server.close()


@pytest.mark.parametrize(("token", "served"), [("x" * 15, False), ("x" * 16, True), ("", False)])
def test_the_token_must_have_sixteen_characters(tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch,
                                                token: str, served: bool) -> None:
    from clara_airflow.errors import ClaraAirflowError

    monkeypatch.setenv("CLARA_DICOM_STATUS_TOKEN", token)
    cfg = config(tmp_path, airflow, listen={"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA",
                                            "status_port": free_port()})
    if served:
        server = start_status(cfg, Receiver(cfg), threading.Thread(target=lambda: None))
        assert server is not None
        server.close()
        return
    with pytest.raises(ClaraAirflowError) as info:
        start_status(cfg, Receiver(cfg), threading.Thread(target=lambda: None))
    assert str(info.value) == ("listen.status_port is set, but the environment variable CLARA_DICOM_STATUS_TOKEN "
                               "(listen.status_token_env) does not hold a token of at least 16 characters; "
                               "/health and /metrics need it as 'Authorization: Bearer <token>'")
