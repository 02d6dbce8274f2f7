"""The last_used heartbeat of a running step: beats while inside, stops on exit, survives errors."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from clara_airflow.services.heartbeat import DEFAULT_INTERVAL, ServiceHeartbeat, heartbeat_interval
from clara_airflow.services.records import read_record, touch


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.writes += 1
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]


def test_refreshes_last_used_while_inside_and_stops_on_exit() -> None:
    store = MemoryStore()
    store.set("clara_service_aaaaaaaaaaaa", json.dumps({"id": "aaaaaaaaaaaa", "last_used": "2020-01-01T00:00:00+00:00"}))
    with ServiceHeartbeat(["aaaaaaaaaaaa"], 0.02, logging.getLogger("t"), store=store) as beat:
        time.sleep(0.2)
    record = read_record("aaaaaaaaaaaa", store)
    assert record is not None and record["last_used"] > "2020-01-01T00:00:00+00:00"
    assert beat.beats >= 2
    writes = store.writes
    time.sleep(0.1)
    assert store.writes == writes, "the thread must be stopped when the step ends"


def test_a_failing_refresh_is_logged_and_never_fails_the_step(caplog: Any) -> None:
    calls: list[str] = []

    def broken(sid: str, store: Any) -> None:
        calls.append(sid)
        raise ConnectionError("API server gone")

    log = logging.getLogger("t")
    with caplog.at_level(logging.WARNING), ServiceHeartbeat(["bbbbbbbbbbbb"], 0.02, log, store=MemoryStore(),
                                                            refresh=broken):
        time.sleep(0.15)
    assert len(calls) >= 2
    assert "could not refresh last_used of clara-svc-bbbbbbbbbbbb: API server gone" in caplog.text


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
    touch("cccccccccccc", store)
    assert store.data == {}


def test_interval_option() -> None:
    assert heartbeat_interval(None) == DEFAULT_INTERVAL == 60
    assert heartbeat_interval("15") == 15
    assert heartbeat_interval("soon") == DEFAULT_INTERVAL
    assert heartbeat_interval("0") == 0
