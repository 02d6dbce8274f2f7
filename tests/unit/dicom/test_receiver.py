"""The DICOM receiver over real DICOM associations (pynetdicom as the modality, in this process):
grouping, the inbox layout, refusals, aborts, and triggers that survive an Airflow outage and a restart.

Airflow's REST API is played by a small HTTP server that answers like ``/auth/token`` and
``POST /api/v2/dags/{dag_id}/dagRuns`` do (201 created, 409 exists); the integration tests in
tests/integration/test_dicom.py use a real Airflow.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from clara_airflow.dicom.config import DicomConfig
from clara_airflow.dicom.listen import serve
from clara_airflow.dicom.receiver import Receiver
from clara_airflow.dicom.trigger import run_id_for
from tests.dicom_data import ct_series

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class FakeAirflow(ThreadingHTTPServer):
    """Answers like Airflow's API for what the receiver calls; ``up`` False answers 503; ``dags`` (name ->
    paused), when set, are the only DAGs (others: 404); ``delay`` seconds before each run is answered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.runs: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.up = True
        self.dags: dict[str, bool] | None = None
        self.delay = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: FakeAirflow

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.server.up:
            return self._answer(503, {"detail": "down"})
        if self.path == "/auth/token":
            ok = body == {"username": "rx", "password": "pw"}
            return self._answer(201 if ok else 401, {"access_token": "t"} if ok else {"detail": "bad"})
        if self.headers.get("Authorization") != "Bearer t":
            return self._answer(401, {"detail": "no token"})
        self.server.posts += 1
        time.sleep(self.server.delay)
        dag = self.path.split("/")[4]
        if self.server.dags is not None and dag not in self.server.dags:
            return self._answer(404, {"detail": f"DAG with dag_id: '{dag}' not found"})
        run_id = body["dag_run_id"]
        if run_id in self.server.runs:
            return self._answer(409, {"detail": "exists"})
        self.server.runs[run_id] = {"dag": self.path.split("/")[4], **body}
        return self._answer(200, {"dag_run_id": run_id})

    def do_GET(self) -> None:
        dag = self.path.split("/")[4]
        if self.headers.get("Authorization") != "Bearer t":
            return self._answer(401, {"detail": "no token"})
        if self.server.dags is not None and dag not in self.server.dags:
            return self._answer(404, {"detail": f"DAG with dag_id: '{dag}' not found"})
        return self._answer(200, {"dag_id": dag, "is_paused": bool((self.server.dags or {}).get(dag))})

    def _answer(self, status: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAirflow]:
    monkeypatch.setenv("CLARA_AIRFLOW_USER", "rx")
    monkeypatch.setenv("CLARA_AIRFLOW_PASSWORD", "pw")
    server = FakeAirflow()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, airflow: FakeAirflow, **changes: Any) -> DicomConfig:
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port(), "ae_title": "CLARA"},
        "inbox": str(tmp_path / "inbox"),
        "airflow": {"url": f"http://127.0.0.1:{airflow.server_address[1]}"},
        "ae_titles": {"CT_AI": {"pipelines": ["p1", "p2"], "timeout": 0.6},
                      "SERIES": {"pipelines": ["p1"], "group_by": "series", "timeout": 0.6, "priority": "immediate"}},
        "sources": [{"ae_title": "MODALITY", "host": "127.0.0.1"}],
        "min_free_disk_mb": 0,
    }
    data.update(changes)
    return DicomConfig.model_validate(data)


class Running:
    def __init__(self, cfg: DicomConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.receiver = Receiver(cfg)
        self.thread = threading.Thread(target=serve, args=(cfg,), kwargs={"stop": self.stop, "tick": 0.05,
                                                                          "receiver": self.receiver}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 10  # listening: a fixed wait was too short on a loaded machine
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", cfg.listen.port)) == 0:
                    break
            assert time.monotonic() < end and self.thread.is_alive(), "the receiver never listened"
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def running(tmp_path: Path, airflow: FakeAirflow) -> Iterator[Running]:
    rx = Running(config(tmp_path, airflow))
    yield rx
    rx.close()


def send(cfg: DicomConfig, files: list[Path], *, calling: str = "MODALITY", called: str = "CT_AI",
         abort: bool = False) -> Any:
    """C-STORE ``files`` in one association; returns the statuses, or the rejected association."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", cfg.listen.port, ae_title=called)
    if not assoc.is_established:
        return assoc
    statuses = [assoc.send_c_store(dcmread(f)).Status for f in files]
    assoc.abort() if abort else assoc.release()
    return statuses


def wait_for(check: Any, seconds: float = 5.0) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_study_becomes_one_complete_folder_and_one_run_per_pipeline(running: Running, airflow: FakeAirflow,
                                                                      tmp_path: Path) -> None:
    study = generate_uid()
    files = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=3)
    assert send(running.cfg, files) == [0, 0, 0]
    folder = Path(running.cfg.inbox) / "CT_AI" / study
    wait_for(lambda: len(airflow.runs) == 2)
    assert (folder / ".complete").is_file() and len(list(folder.glob("*.dcm"))) == 3
    run = airflow.runs[run_id_for("p1", "CT_AI", study)]
    assert run["dag"] == "p1" and run["conf"] == {"clara_payload": str(folder), "clara_priority": "normal"}
    assert run_id_for("p2", "CT_AI", study) in airflow.runs
    # the sender thread settles each trigger file once Airflow has answered: a moment after the run exists
    wait_for(lambda: not list((Path(running.cfg.inbox) / ".clara-receiver" / "pending").glob("*.json")))
    # the same study again, later: kept aside, never a second folder or run
    send(running.cfg, ct_series(tmp_path / "again", study=study, series=generate_uid(), count=1))
    late = wait_for(lambda: list((Path(running.cfg.inbox) / "_late" / "CT_AI" / study).glob("*/*.dcm")))
    assert len(late) == 1 and len(airflow.runs) == 2 and len(list(folder.glob("*.dcm"))) == 3


def test_associations_within_the_quiet_time_make_one_group(airflow: FakeAirflow, tmp_path: Path) -> None:
    # a quiet time of 1.5 s, well above the 0.3 s between associations: a loaded machine's slower
    # association set-up must not split the group
    running = Running(config(tmp_path, airflow, ae_titles={"CT_AI": {"pipelines": ["p1", "p2"], "timeout": 1.5}}))
    study = generate_uid()
    try:
        for n in range(3):
            send(running.cfg, ct_series(tmp_path / f"s{n}", study=study, series=generate_uid(), count=2))
            time.sleep(0.3)  # under the quiet time
        wait_for(lambda: len(airflow.runs) == 2)
        time.sleep(0.8)
    finally:
        running.close()
    assert len(airflow.runs) == 2
    assert len(list((Path(running.cfg.inbox) / "CT_AI" / study).glob("*.dcm"))) == 6


def test_grouped_by_series_each_series_is_a_run(running: Running, airflow: FakeAirflow, tmp_path: Path) -> None:
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    files = [f for n, s in enumerate(series) for f in ct_series(tmp_path / f"s{n}", study=study, series=s)]
    send(running.cfg, files, called="SERIES")
    wait_for(lambda: len(airflow.runs) == 2)
    assert set(airflow.runs) == {run_id_for("p1", "SERIES", s, "immediate") for s in series}
    assert all(r.startswith("dicom-immediate__p1__") for r in airflow.runs)
    assert all(r["conf"]["clara_priority"] == "immediate" for r in airflow.runs.values())


def test_an_aborted_association_leaves_nothing(running: Running, airflow: FakeAirflow, tmp_path: Path) -> None:
    study = generate_uid()
    send(running.cfg, ct_series(tmp_path / "s", study=study, series=generate_uid()), abort=True)
    time.sleep(1.0)
    assert airflow.runs == {} and not (Path(running.cfg.inbox) / "CT_AI" / study).exists()
    assert not any((Path(running.cfg.inbox) / ".clara-receiver" / "incoming").iterdir())


def test_unknown_sources_and_called_titles_are_refused(running: Running, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    files = ct_series(tmp_path / "s", study=generate_uid(), series=generate_uid(), count=1)
    assoc = send(running.cfg, files, calling="STRANGER")
    assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 0x03
    assoc = send(running.cfg, files, called="NOBODY")
    assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 0x07
    assert send(running.cfg, files, calling="STRANGER").is_rejected  # counted again, for /metrics
    assert running.receiver.counts == {"refused:source": 2, "refused:called_ae": 1}
    stranger = ("association refused: calling=STRANGER host=127.0.0.1 called=CT_AI reason=calling AE title "
                "'STRANGER' from 127.0.0.1 is not in sources")
    # (the listener's own "listening:" line may come after its port accepts, and the sender's DAG check any time)
    assert [m for r in caplog.records if r.name == "clara_airflow.dicom" and (m := r.getMessage()).startswith(
        "association ")] == [
        stranger, "association refused: calling=MODALITY host=127.0.0.1 called=NOBODY reason=called AE title "
                  "'NOBODY' is not configured (ae_titles)", stranger]


def test_low_disk_refuses_associations(tmp_path: Path, airflow: FakeAirflow) -> None:
    rx = Running(config(tmp_path, airflow, min_free_disk_mb=10**9))
    try:
        assoc = send(rx.cfg, ct_series(tmp_path / "s", study=generate_uid(), series=generate_uid(), count=1))
        assert assoc.is_rejected and assoc.acceptor.primitive.result == 0x02  # transient: try again later
    finally:
        rx.close()


def test_echo_is_answered(running: Running) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.cfg.listen.port, ae_title="CLARA")
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_triggers_wait_on_disk_while_airflow_is_down_and_survive_a_restart(tmp_path: Path,
                                                                          airflow: FakeAirflow) -> None:
    airflow.up = False
    cfg = config(tmp_path, airflow)
    rx = Running(cfg)
    study = generate_uid()
    try:
        send(cfg, ct_series(tmp_path / "s", study=study, series=generate_uid(), count=1))
        pending = Path(cfg.inbox) / ".clara-receiver" / "pending"
        wait_for(lambda: len(list(pending.glob("*.json"))) == 2)
    finally:
        rx.close()
    airflow.up = True
    restarted = Running(cfg)
    try:
        wait_for(lambda: len(airflow.runs) == 2)
        assert set(airflow.runs) == {run_id_for("p1", "CT_AI", study), run_id_for("p2", "CT_AI", study)}
        assert not list(pending.glob("*.json"))
    finally:
        restarted.close()
    # a trigger whose first attempt got through but was not recorded as sent: Airflow's 409 settles it
    restarted.receiver.triggers.add("p1", run_id_for("p1", "CT_AI", study), {}, "normal")
    assert restarted.receiver.triggers.flush() == 1 and len(airflow.runs) == 2


def test_a_receiver_restarted_mid_group_completes_it(tmp_path: Path, airflow: FakeAirflow) -> None:
    cfg = config(tmp_path, airflow)
    study = generate_uid()
    gathering = Path(cfg.inbox) / ".clara-receiver" / "groups" / "CT_AI" / study
    gathering.mkdir(parents=True)
    for path in ct_series(tmp_path / "s", study=study, series=generate_uid(), count=2):
        path.rename(gathering / path.name.replace(".dcm", "-x.dcm"))
    rx = Receiver(cfg)
    rx.tick(time.monotonic() + 1)
    rx.triggers.flush()
    assert (Path(cfg.inbox) / "CT_AI" / study / ".complete").is_file() and len(airflow.runs) == 2
