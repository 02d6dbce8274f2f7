"""The trigger sender against an HTTP peer that misbehaves as real ones do (a raw socket server, so it
can answer what no HTTP library would: garbage, a cut body, nothing), its back-off, its permanent
failures, and ``dicom retry``."""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.dicom.config import AirflowApi
from clara_airflow.dicom.status import retry
from clara_airflow.dicom.trigger import MAX_BACKOFF, AirflowClient, Triggers, records, run_id_for

Answer = Callable[[str, str], bytes]  # (method, path) -> the raw bytes sent back


def http(status: int, body: Any, *, length: int | None = None) -> bytes:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {length or len(raw)}\r\n\r\n"
    return head.encode() + raw


def good(method: str, path: str) -> bytes:
    return http(201, {"access_token": "t"}) if path == "/auth/token" else http(200, {"dag_run_id": "x"})


class Peer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer: Answer = good
        self.calls: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[Any] = []


class _Handler(socketserver.StreamRequestHandler):
    server: Peer

    def handle(self) -> None:
        request = self.rfile.readline().decode()
        length, headers = 0, {}
        while (line := self.rfile.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
            if name.lower() == "content-length":
                length = int(value)
        self.server.headers.append(headers)
        raw = self.rfile.read(length)
        self.server.bodies.append(json.loads(raw) if raw else None)
        method, path = request.split()[:2]
        self.server.calls.append(f"{method} {path}")
        raw = self.server.answer(method, path)
        if raw:
            self.wfile.write(raw)
        self.wfile.flush()
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Peer]:
    monkeypatch.setenv("CLARA_AIRFLOW_USER", "rx")
    monkeypatch.setenv("CLARA_AIRFLOW_PASSWORD", "pw")
    server = Peer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def triggers(tmp_path: Path, peer: Peer, clock: Clock | None = None) -> Triggers:
    client = AirflowClient(AirflowApi(url=f"http://127.0.0.1:{peer.server_address[1]}"), timeout=2.0)
    return Triggers(tmp_path / "rx" / "pending", client, clock=clock or Clock())


def queue(spool: Triggers, tmp_path: Path, pipeline: str = "p1") -> str:
    group = tmp_path / "inbox" / "CT" / "1.2.3"
    group.mkdir(parents=True, exist_ok=True)
    (group / ".complete").write_text("1 instances\n")
    run_id = run_id_for(pipeline, "CT", "1.2.3")
    spool.add(pipeline, run_id, {"clara_payload": str(group)}, "normal")
    return run_id


def cut_body(method: str, path: str) -> bytes:
    return good(method, path) if path == "/auth/token" else http(200, b'{"dag_r', length=500)


@pytest.mark.parametrize(("answer", "error"), [
    (lambda m, p: b"SSH-2.0-OpenSSH_9.2\r\n", "BadStatusLine"),  # not HTTP at all
    (lambda m, p: b"", "RemoteDisconnected"),  # the connection closes without an answer
    (cut_body, "IncompleteRead"),
    (lambda m, p: http(200, {"token": "no access_token here"}), "without an access_token"),
    (lambda m, p: http(200, b"<html>proxy login</html>"), "without an access_token"),
    (lambda m, p: http(503, {"detail": "database is locked"}), "/auth/token (HTTP 503)"),
    (lambda m, p: http(503, {"detail": "database is locked"}) if p != "/auth/token" else good(m, p),
     "^HTTP 503: database is locked$"),
    (lambda m, p: http(401, {"detail": "expired"}) if p != "/auth/token" else good(m, p), "HTTP 401: expired"),
])
def test_any_failure_of_a_send_is_kept_and_retried_never_raised(tmp_path: Path, peer: Peer, answer: Answer,
                                                                error: str) -> None:
    peer.answer = answer
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path)
    assert spool.flush() == 0
    (pending,) = records(spool.spool)
    assert pending["run_id"] == run_id and pending["attempts"] == 1
    assert re.search(error, pending["last_error"]) if error.startswith("^") else error in pending["last_error"]
    peer.answer = good
    assert spool.flush(spool.clock() + 1) == 1 and records(spool.spool) == []


def test_a_401_is_retried_once_with_a_fresh_token(tmp_path: Path, peer: Peer) -> None:
    tokens = iter(["old", "new"])
    seen: list[str] = []

    def answer(method: str, path: str) -> bytes:
        if path == "/auth/token":
            return http(201, {"access_token": next(tokens)})
        seen.append(path)
        return http(401, {"detail": "expired"}) if len(seen) == 1 else http(200, {})

    peer.answer = answer
    spool = triggers(tmp_path, peer)
    queue(spool, tmp_path)
    assert spool.flush() == 1 and peer.calls.count("POST /auth/token") == 2


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_a_permanent_refusal_fails_the_trigger_with_airflows_message(tmp_path: Path, peer: Peer, status: int,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(status, {"detail": "DAG typo not found"})
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path, "typo")
    assert spool.flush() == 0
    (failed,) = records(spool.failed)
    assert failed["run_id"] == run_id and failed["reason"] == f"HTTP {status}: DAG typo not found"
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.name == "clara_airflow.dicom" and "`clara-airflow dicom retry --config <dicom.yaml> " in error.message
    assert records(spool.spool) == []
    posts = len(peer.calls)
    spool.flush(spool.clock() + MAX_BACKOFF * 10)
    assert len(peer.calls) == posts, "a failed trigger is not sent again by itself"
    peer.answer = good
    assert retry(spool.spool, run_id) == [run_id] and records(spool.failed) == []
    assert spool.flush(spool.clock() + MAX_BACKOFF * 20) == 1, "dicom retry puts it back; the sender finds it"


def test_back_off_doubles_from_one_second_and_stops_at_sixty(tmp_path: Path, peer: Peer) -> None:
    peer.answer = lambda m, p: http(503, {"detail": "down"})
    clock = Clock()
    spool = triggers(tmp_path, peer, clock)
    queue(spool, tmp_path)
    gaps, last = [], clock.now
    for _ in range(9):
        spool.flush()
        posted = len(peer.calls)
        clock.now += spool.next_wait(limit=1e9) - 0.01
        spool.flush()
        assert len(peer.calls) == posted, "nothing is sent before its time"
        clock.now += 0.01
        gaps.append(round(clock.now - last, 2))
        last = clock.now
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_trigger_waits_for_its_group_to_be_in_the_inbox(tmp_path: Path, peer: Peer) -> None:
    spool = triggers(tmp_path, peer)
    folder = tmp_path / "inbox" / "CT" / "9.9"
    spool.add("p1", run_id_for("p1", "CT", "9.9"), {"clara_payload": str(folder)}, "normal")
    assert spool.flush() == 0 and peer.calls == [], "never a run for a folder that is not complete"
    assert spool.next_wait() == 1.0, "looked at again in a second (a completion wakes it sooner)"
    folder.mkdir(parents=True)
    (folder / ".complete").write_text("")
    assert spool.flush(spool.clock() + 1) == 1


def test_run_ids_carry_the_called_ae_title() -> None:
    assert run_id_for("p", "CT_AI", "1.2") != run_id_for("p", "MR_AI", "1.2")
    assert run_id_for("p", "CT AI", "1.2").startswith("dicom-normal__p__ae-")  # a space cannot be in a run id
    assert run_id_for("p", "CT AI", "1.2") != run_id_for("p", "CT_AI", "1.2")


def test_run_ids_keep_what_a_run_id_may_hold_and_digest_the_rest() -> None:
    assert run_id_for("p", "CT_AI.2-x", "1.2", "higher") == "dicom-higher__p__CT_AI.2-x__1.2"
    assert run_id_for("p" * 150, "CT", "1.2") == f"dicom-normal__{'p' * 150}__CT__1.2"
    digested = run_id_for("p" * 151, "CT", "1.2").split("__")[1]
    assert len(digested) == 16 and set(digested) <= set("0123456789abcdef")
    assert run_id_for("p", "CT AI", "1.2").split("__")[2] == "ae-" + __import__("hashlib").sha256(b"CT AI").hexdigest()[:8]


def test_the_most_urgent_trigger_goes_first_then_the_oldest(tmp_path: Path, peer: Peer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    spool = triggers(tmp_path, peer)
    folder = tmp_path / "inbox" / "CT" / "1"
    folder.mkdir(parents=True)
    (folder / ".complete").write_text("")
    clock = iter(range(100, 200))
    monkeypatch.setattr("clara_airflow.dicom.trigger.time.time", lambda: float(next(clock)))
    order = ["lower", "normal", "higher", "immediate", "normal", "lower", "higher", "normal", "normal", "normal",
             "normal"]
    for n, priority in enumerate(order):
        spool.add(f"{priority}-{n}", f"run-{n}", {"clara_payload": str(folder)}, priority)
    expected = ["immediate-3", "higher-2", "higher-6", "normal-1", "normal-4", "normal-7", "normal-8", "normal-9",
                "normal-10", "lower-0", "lower-5"]
    assert [r["dag_id"] for r in records(spool.spool)] == expected
    spool.flush()
    assert [call.split("/")[4] for call in peer.calls if call.startswith("POST /api")] == expected


def test_trigger_files_written_by_hand_or_by_older_versions_are_read(tmp_path: Path) -> None:
    spool = tmp_path / "pending"
    spool.mkdir()
    (spool / "minimal.json").write_text(json.dumps({"dag_id": "m", "run_id": "r", "conf": {}}))
    (spool / "odd.json").write_text(json.dumps({"dag_id": "o", "run_id": "r2", "conf": {}, "priority": "urgent",
                                                "queued": 5}))
    (spool / "late.json").write_text(json.dumps({"dag_id": "l", "run_id": "r3", "conf": {}, "priority": "lower",
                                                 "queued": 1}))
    (spool / "early.json").write_text(json.dumps({"dag_id": "e", "run_id": "r4", "conf": {}, "queued": 0.5}))
    (spool / "list.json").write_text("[]")
    (spool / "partial.json").write_text(json.dumps({"dag_id": "p", "run_id": "r5"}))
    (spool / "broken.json").write_text("{")
    # no queued time reads as the oldest, an unknown priority as normal, and what is not a trigger is left out
    assert [r["dag_id"] for r in records(spool)] == ["m", "e", "o", "l"]


def test_a_dag_airflow_cannot_describe_is_unknown_with_its_answer(tmp_path: Path, peer: Peer) -> None:
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(500, b"x" * 300)
    client = triggers(tmp_path, peer).client
    assert client.dag_state("p") == "unknown: HTTP 500: " + "x" * 200


def test_a_trigger_put_back_by_dicom_retry_is_found_within_five_seconds(tmp_path: Path, peer: Peer) -> None:
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(404, {"detail": "not yet"})
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path)
    spool.flush()
    peer.answer = good
    retry(spool.spool, run_id)  # what another process (the command line) does
    assert spool.flush(spool.clock() + 4.9) == 0
    assert spool.flush(spool.clock() + 5.0) == 1


def test_requests_are_json_with_a_bearer_token(tmp_path: Path, peer: Peer) -> None:
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path)
    queue(spool, tmp_path, "p2")
    assert spool.flush() == 2
    login, run, _ = peer.headers
    assert login["content-type"] == run["content-type"] == "application/json"
    assert "authorization" not in login and run["authorization"] == "Bearer t"
    assert peer.calls.count("POST /auth/token") == 1, "one login for both runs"
    assert peer.bodies[0] == {"username": "rx", "password": "pw"}
    assert peer.bodies[1] == {"dag_run_id": run_id, "logical_date": None,
                              "conf": {"clara_payload": str(tmp_path / "inbox" / "CT" / "1.2.3")}}


def test_a_body_that_is_not_utf8_is_still_read(tmp_path: Path, peer: Peer) -> None:
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(502, b"\xff\xfe bad gateway")
    spool = triggers(tmp_path, peer)
    queue(spool, tmp_path)
    spool.flush()
    assert records(spool.spool)[0]["last_error"] == "HTTP 502: \ufffd\ufffd bad gateway"
    peer.answer = lambda m, p: http(500, b"\xff" + b"x" * 300)
    with pytest.raises(PermissionError) as err:
        spool.client.token(fresh=True)
    assert str(err.value).endswith("(HTTP 500): \ufffd" + "x" * 199)
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(200, b"\xff created")
    assert spool.flush(spool.clock() + 10) == 1, "Airflow took it: what its body holds does not matter"


@pytest.mark.parametrize(("body", "message"), [
    ({"token": "t"}, "answered HTTP 200 without an access_token: '{\"token\": \"t\"}'"),
    ({"access_token": 123}, "answered an access_token that is not a string"),
    ({"access_token": ""}, "answered an access_token that is not a string"),
])
def test_a_token_answer_without_a_usable_token_is_named(tmp_path: Path, peer: Peer, body: Any, message: str) -> None:
    peer.answer = lambda m, p: http(200, body)
    client = triggers(tmp_path, peer).client
    with pytest.raises(ValueError) as err:
        client.token()
    assert str(err.value) == f"{client.api.url}/auth/token {message}"


@pytest.mark.parametrize("env", [{"CLARA_AIRFLOW_USER": ""}, {"CLARA_AIRFLOW_PASSWORD": ""}])
def test_missing_credentials_are_named_and_retried(tmp_path: Path, peer: Peer, monkeypatch: pytest.MonkeyPatch,
                                                   env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spool = triggers(tmp_path, peer)
    queue(spool, tmp_path)
    assert spool.flush() == 0 and peer.calls == []
    (pending,) = records(spool.spool)
    assert pending["last_error"] == ("PermissionError: set CLARA_AIRFLOW_USER and CLARA_AIRFLOW_PASSWORD to an "
                                     "Airflow user that may trigger the routed DAGs")


def test_an_airflow_that_never_answers_costs_one_timeout(tmp_path: Path, peer: Peer) -> None:
    import time

    def silent(method: str, path: str) -> bytes:
        time.sleep(3)
        return b""

    peer.answer = silent
    client = AirflowClient(AirflowApi(url=f"http://127.0.0.1:{peer.server_address[1]}"), timeout=0.5)
    assert AirflowClient(AirflowApi()).timeout == 10.0
    spool = Triggers(tmp_path / "rx" / "pending", client, clock=Clock())
    queue(spool, tmp_path)
    began = time.monotonic()
    assert spool.flush() == 0
    assert time.monotonic() - began < 2.0
    assert "timed out" in records(spool.spool)[0]["last_error"]


@pytest.mark.parametrize(("status", "note"), [(200, ""), (201, ""), (409, " (it existed already)")])
def test_created_or_existing_settles_the_trigger(tmp_path: Path, peer: Peer, caplog: pytest.LogCaptureFixture,
                                                 status: int, note: str) -> None:
    caplog.set_level("INFO", "clara_airflow.dicom")
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(status, {})
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path)
    (fresh,) = records(spool.spool)
    assert (fresh["attempts"], fresh["last_error"]) == (0, "")
    assert oct(os.stat(fresh["_path"]).st_mode & 0o777) == "0o600", "a trigger holds paths of patients' studies"
    assert spool.flush() == 1 and records(spool.spool) == []
    (line,) = [r.message for r in caplog.records if r.levelname == "INFO"]
    assert line == f"run started: dag_id=p1 run_id={run_id} priority=normal http={status}{note}"


def test_hand_written_triggers_are_sent_in_order_and_counted(tmp_path: Path, peer: Peer) -> None:
    spool = triggers(tmp_path, peer)
    spool.spool.mkdir(parents=True, exist_ok=True)
    for name, record in {"a": {"priority": "normal", "queued": 3}, "b": {"priority": "normal", "queued": 1},
                         "c": {"priority": "urgent", "queued": 2}, "d": {"queued": 0.5}, "e": {"priority": "lower"},
                         "f": {"priority": "normal", "queued": 4}, "h": {"priority": "normal"}}.items():
        (spool.spool / f"{name}.json").write_text(json.dumps({"dag_id": name, "run_id": f"r-{name}", "conf": {},
                                                             **record}))
    assert spool.flush() == 7
    posted = [call.split("/")[4] for call in peer.calls if call.startswith("POST /api")]
    assert posted == ["h", "d", "b", "c", "a", "f", "e"], "no queued time: the oldest"
    peer.answer = lambda m, p: http(503, {"detail": "down"})
    (spool.spool / "g.json").write_text(json.dumps({"dag_id": "g", "run_id": "r-g", "conf": {}}))
    spool.flush(spool.clock() + 10)
    assert records(spool.spool)[0]["attempts"] == 1, "an older trigger without attempts counts from 0"


def test_what_a_failed_attempt_logs_and_keeps(tmp_path: Path, peer: Peer, caplog: pytest.LogCaptureFixture) -> None:
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(503, {"detail": "down"})
    spool = triggers(tmp_path, peer)
    run_id = queue(spool, tmp_path)
    spool.flush()
    (pending,) = records(spool.spool)
    assert oct(os.stat(pending["_path"]).st_mode & 0o777) == "0o600"
    assert [r for r in caplog.records if r.name == "clara_airflow.dicom"][-1].message == (f"cannot start {run_id} of p1 yet (HTTP 503: down); try 1, retrying in 1 s; "
                                          f"the trigger is kept in {pending['_path']}")


def test_disk_errors_of_the_sender_are_logged_and_it_goes_on(tmp_path: Path, peer: Peer,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import clara_airflow.dicom.trigger as trigger

    spool = triggers(tmp_path, peer)
    first = queue(spool, tmp_path)
    queue(spool, tmp_path, "p2")
    full = OSError(28, "No space left on device")
    monkeypatch.setattr(trigger, "write_file", lambda *a, **k: (_ for _ in ()).throw(full))
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(503, {"detail": "down"})
    spool.flush()
    assert "cannot record the attempt in " in caplog.text and ": [Errno 28] No space left on device" in caplog.text
    peer.answer = lambda m, p: good(m, p) if p == "/auth/token" else http(404, {"detail": "no such DAG"})
    spool.flush(spool.clock() + 1)
    assert len(records(spool.spool)) == 2 and not records(spool.failed), "kept pending while the disk is full"
    assert "cannot move the refused trigger " in caplog.text
    assert spool.next_wait(limit=1e9) == MAX_BACKOFF, "tried again in a minute"
    monkeypatch.undo()
    spool.flush(spool.clock() + 1 + MAX_BACKOFF)
    assert sorted(r["dag_id"] for r in records(spool.failed)) == ["p1", "p2"], "the second one finds the folder there"
    assert all(oct(os.stat(r["_path"]).st_mode & 0o777) == "0o600" for r in records(spool.failed))
    error = [r.message for r in caplog.records if r.message.startswith("Airflow refused")][0]
    assert error == (f"Airflow refused the run {first} of p1 for good (HTTP 404: no such DAG); the trigger is kept in "
                     f"{spool.failed}: fix the cause, then `clara-airflow dicom retry --config <dicom.yaml> {first}`")


def test_a_trigger_file_removed_by_someone_else_is_settled_quietly(tmp_path: Path, peer: Peer,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    spool = triggers(tmp_path, peer)
    queue(spool, tmp_path)
    marker = tmp_path / "inbox" / "CT" / "1.2.3" / ".complete"
    marker.unlink()
    assert spool.flush() == 0  # its group is not in the inbox yet
    records(spool.spool)[0]["_path"].unlink()  # meanwhile a person, or a second receiver, removes the file
    marker.write_text("")
    assert spool.flush(spool.clock() + 1) == 1 and "cannot remove" not in caplog.text
    assert spool.flush(spool.clock() + 2) == 0, "sent once"
