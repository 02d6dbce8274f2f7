"""The last_used heartbeat of a running step: beats while inside, stops on exit, survives errors."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clara_airflow.services.heartbeat import ServiceHeartbeat
from clara_airflow.services.records import touch, use_key
from tests.memory import MemoryStore


@contextmanager
def recording(name: str) -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A logger at debug level whose records the test reads (each level and message exactly)."""
    records: list[logging.LogRecord] = []
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        yield log, records
    finally:
        log.removeHandler(handler)


def test_refreshes_last_used_while_inside_and_stops_on_exit() -> None:
    store = MemoryStore()
    key = use_key("aaaaaaaaaaaa", "dag-a")
    store.set(key, json.dumps({"service": "aaaaaaaaaaaa", "dag_id": "dag-a", "names": ["s"], "connections": {},
                               "idle_ttl": 60, "last_used": "2020-01-01T00:00:00+00:00", "schema": 1}))
    with ServiceHeartbeat(["aaaaaaaaaaaa"], 0.02, logging.getLogger("t"), dag_id="dag-a", store=store) as beat:
        time.sleep(0.2)
    assert json.loads(store.data[key])["last_used"] > "2020-01-01T00:00:00+00:00"
    assert beat.beats >= 2
    writes = store.writes
    time.sleep(0.1)
    assert store.writes == writes, "the thread must be stopped when the step ends"


def test_a_failing_refresh_is_logged_and_never_fails_the_step(caplog: Any) -> None:
    calls: list[str] = []

    def broken(sid: str, dag_id: str, store: Any) -> None:
        calls.append(sid)
        raise ConnectionError("API server gone")

    log = logging.getLogger("t")
    with caplog.at_level(logging.WARNING), ServiceHeartbeat(["bbbbbbbbbbbb"], 0.02, log, store=MemoryStore(),
                                                            refresh=broken):
        time.sleep(0.15)
    assert len(calls) >= 2
    assert "could not refresh last_used of clara-svc-bbbbbbbbbbbb (ConnectionError: API server gone)" in caplog.text


def test_no_thread_without_services_or_with_interval_0() -> None:
    store = MemoryStore()
    with ServiceHeartbeat([], 0.01, logging.getLogger("t"), store=store) as beat:
        time.sleep(0.05)
    assert beat._thread is None
    with ServiceHeartbeat(["aaaaaaaaaaaa"], 0, logging.getLogger("t"), store=store) as beat:
        time.sleep(0.05)
    assert beat._thread is None and store.writes == 0


def test_a_missing_record_is_not_created() -> None:
    store = MemoryStore()
    touch("cccccccccccc", "dag-c", store)
    assert store.data == {}


def test_any_error_of_a_refresh_keeps_the_beat_alive_and_each_kind_is_logged_once() -> None:
    """What a refresh really meets: the SDK's runtime error (API server down), a KeyError from a reply of
    another shape, even SystemExit from a library; the beat outlives them all."""
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    errors: list[BaseException] = [
        AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503})),
        KeyError("value"), SystemExit(3), KeyError("value"), AirflowRuntimeError(ErrorResponse(
            error=ErrorType.API_SERVER_ERROR, detail={"status_code": 503}))]
    calls: list[int] = []

    def flaky(sid: str, dag_id: str, store: Any) -> None:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]

    with recording("heartbeat-kinds") as (log, records), \
            ServiceHeartbeat(["cccccccccccc"], 0.01, log, store=MemoryStore(), refresh=flaky) as beat:
        deadline = time.monotonic() + 5
        while len(calls) < len(errors) + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= len(errors) + 2, "the beat went on after every kind of error"
    assert beat.failures == {"AirflowRuntimeError": 2, "KeyError": 2, "SystemExit": 1}
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("further errors of this kind" in w for w in warnings)


def test_each_beat_refreshes_every_service_once_in_a_named_daemon_thread() -> None:
    import threading

    calls: list[tuple[str, str]] = []
    threads: list[threading.Thread] = []

    def refresh(sid: str, dag_id: str, store: Any) -> None:
        calls.append((sid, dag_id))
        threads.append(threading.current_thread())

    beat = ServiceHeartbeat(["bbbbbbbbbbbb", "aaaaaaaaaaaa", "bbbbbbbbbbbb"], 0.01, logging.getLogger("t"),
                            store=MemoryStore(), refresh=refresh)
    assert beat.service_ids == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"] and beat.beats == 0
    with beat:
        deadline = time.monotonic() + 5
        while len(calls) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls[:6] == [("aaaaaaaaaaaa", ""), ("bbbbbbbbbbbb", "")] * 3, "no dag_id given: the empty one"
    assert len(calls) == 2 * beat.beats, "one beat refreshes each service once"
    assert {(t.name, t.daemon) for t in threads} == {("clara-service-heartbeat", True)}


def test_the_first_error_of_a_kind_is_a_warning_with_the_retry_note_and_repeats_are_debug() -> None:
    with recording("heartbeat-words") as (log, records):
        beat = ServiceHeartbeat(["dddddddddddd"], 1, log)
        beat._failed("dddddddddddd", ConnectionError("API server gone"))
        beat._failed("dddddddddddd", ConnectionError("still gone"))
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "could not refresh last_used of clara-svc-dddddddddddd (ConnectionError: API server gone); "
                          "retried every beat, further errors of this kind are logged at debug level"),
        (logging.DEBUG, "could not refresh last_used of clara-svc-dddddddddddd (ConnectionError: still gone)")]
