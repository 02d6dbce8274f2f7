"""leases.py rule by rule: key formats, what a lease and a stop intent hold, staleness and waiting."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clara_airflow.services import leases
from clara_airflow.services.records import BadRecord
from tests.memory import MemoryStore

SID = "abcdefabcdef"


def test_keys() -> None:
    digest = hashlib.sha256(b"dag\0run").hexdigest()[:16]
    assert leases.lease_key(SID, "dag", "run") == f"clara_lease_{SID}_{digest}"
    assert leases.stop_key(SID) == f"clara_stopping_{SID}"


def test_a_lease_holds_its_run_and_is_frozen() -> None:
    store = MemoryStore()
    leases.take_lease(SID, "dag", "run", store)
    raw = json.loads(store.data[leases.lease_key(SID, "dag", "run")])
    assert {k: v for k, v in raw.items() if k != "since"} == {"service": SID, "dag_id": "dag", "run_id": "run",
                                                               "schema": 1}
    (lease,) = leases.leases(SID, store)
    assert not isinstance(lease, BadRecord)
    assert (lease.key, lease.schema) == (leases.lease_key(SID, "dag", "run"), 1)
    assert lease == dataclasses.replace(lease, key="other"), "the key is not part of a lease's identity"
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.run_id = "x"  # type: ignore[misc]


def test_leases_of_one_service_or_all() -> None:
    store = MemoryStore()
    leases.take_lease(SID, "d", "r", store)
    leases.take_lease("bbbbbbbbbbbb", "d", "r", store)
    assert [x.service for x in leases.leases(SID, store)] == [SID]  # type: ignore[union-attr]
    assert sorted(x.service for x in leases.leases(None, store)) == [SID, "bbbbbbbbbbbb"]  # type: ignore[union-attr]


def test_a_lease_of_another_schema_is_bad_and_holds() -> None:
    store = MemoryStore()
    store.set(f"clara_lease_{SID}_x", json.dumps({"service": SID, "dag_id": "d", "run_id": "r", "since": "", "schema": 2}))
    (holder,) = leases.live_leases(SID, store, state_of=lambda d, r: "gone")
    assert holder == leases.Holder(f"clara_lease_{SID}_x", "?", "?", "bad lease (schema 2 is not 1 (written by another "
                                   "version)); delete the Variable to release it")
    with pytest.raises(dataclasses.FrozenInstanceError):
        holder.state = "x"  # type: ignore[misc]


def test_the_stop_intent_says_who_and_since_when() -> None:
    store = MemoryStore()
    leases.mark_stopping(SID, "reaper", store)
    raw = json.loads(store.data[f"clara_stopping_{SID}"])
    assert raw["service"] == SID and raw["by"] == "reaper"
    assert 0 <= (leases.stopping_since(SID, store) or 0) < 5
    leases.clear_stopping(SID, store)
    assert store.data == {} and leases.stopping_since(SID, store) is None
    leases.clear_stopping(SID, store)  # clearing twice is fine


@pytest.mark.parametrize(("age", "kept"), [(-290.0, True), (119.0, True), (419.0, True), (421.0, False)])
def test_an_intent_is_stale_by_its_own_clock_only_past_the_clock_skew(age: float, kept: bool) -> None:
    """The writer's clock may be up to CLOCK_SKEW (300 s) off this host's, either way: a live stop is
    never taken for a dead one because of it."""
    store = MemoryStore()
    since = (datetime.now(UTC) - timedelta(seconds=age)).isoformat()
    store.set(leases.stop_key(SID), json.dumps({"service": SID, "by": "x", "since": since}))
    assert (leases.stopping_since(SID, store) is not None) is kept
    assert (leases.stop_key(SID) in store.data) is kept
    assert (leases.STOP_INTENT_STALE, leases.CLOCK_SKEW) == (120.0, 300.0)


def test_an_intent_watched_for_120_seconds_by_this_host_is_stale_whatever_its_clock_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    leases.mark_stopping(SID, "a reaper on a host whose clock runs 10 minutes fast", store)
    raw = json.loads(store.data[leases.stop_key(SID)])
    store.set(leases.stop_key(SID), json.dumps({**raw, "since": (datetime.now(UTC) + timedelta(minutes=10)).isoformat()}))
    seen: dict[str, float] = {}
    assert leases.stopping_since(SID, store, seen) is not None
    assert list(seen) == [raw["token"]], "sightings are kept per intent (its token)"
    seen[raw["token"]] -= 121.0  # this host has watched the same intent for 121 s
    assert leases.stopping_since(SID, store, seen) is None and store.data == {}
    leases.mark_stopping(SID, "the next stop", store)
    assert leases.stopping_since(SID, store, seen) is not None, "a new intent starts a new watch"


@pytest.mark.parametrize("raw", ['{"by": "x"}', '{"since": "yesterday"}', "[1]", "not json"])
def test_an_unreadable_intent_counts_as_stale(raw: str) -> None:
    store = MemoryStore()
    store.set(leases.stop_key(SID), raw)
    assert leases.stopping_since(SID, store) is None and store.data == {}


def test_waiting_announces_once_and_gives_up_at_the_deadline(caplog: Any) -> None:
    store = MemoryStore()
    leases.mark_stopping(SID, "reaper", store)
    began = time.monotonic()
    with caplog.at_level(logging.INFO):
        leases.wait_while_stopping(SID, store, deadline=time.monotonic() + 0.3, log=logging.getLogger("w"), poll=0.05)
    assert 0.3 <= time.monotonic() - began < 1.5
    assert caplog.text.count(f"service clara-svc-{SID} is being stopped; waiting, then starting it again") == 1
    caplog.clear()
    leases.clear_stopping(SID, store)
    with caplog.at_level(logging.INFO):
        leases.wait_while_stopping(SID, store, deadline=time.monotonic() + 5, log=logging.getLogger("w"))
    assert caplog.text == ""


def test_the_default_poll_is_a_quarter_second() -> None:
    import inspect

    assert inspect.signature(leases.wait_while_stopping).parameters["poll"].default == 0.25


def test_a_lease_s_defaults_are_schema_1_and_no_key() -> None:
    lease = leases.Lease(SID, "d", "r", "2026-12-06T00:00:00+00:00")
    assert (lease.schema, lease.key) == (1, "")


def test_a_bad_lease_does_not_hide_the_good_leases_after_it() -> None:
    store = MemoryStore()
    store.set(f"clara_lease_{SID}_0", "not json")  # listed first
    leases.take_lease(SID, "d", "r", store)
    holders = leases.live_leases(SID, store, state_of=lambda d, r: "running")
    assert [(h.dag_id, h.run_id, h.state) for h in holders] == [
        ("?", "?", "bad lease (not JSON); delete the Variable to release it"), ("d", "r", "running")]


class FrozenClock:
    """datetime.now and time.monotonic of leases.py, moved only by the test (and by sleep)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
        self.mono = 1000.0
        clock = self

        class Now(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return clock.wall

        monkeypatch.setattr(leases, "datetime", Now)
        monkeypatch.setattr(leases.time, "monotonic", lambda: self.mono)
        monkeypatch.setattr(leases.time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.mono += seconds

    def intent(self, store: MemoryStore, written_age: float) -> None:
        since = (self.wall - timedelta(seconds=written_age)).isoformat()
        store.set(leases.stop_key(SID), json.dumps({"service": SID, "by": "x", "since": since, "token": "t1"}))


def test_the_stale_boundaries_are_exact_420_s_by_the_writer_and_120_s_by_this_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenClock(monkeypatch)
    store = MemoryStore()
    clock.intent(store, 420.0)
    assert leases.stopping_since(SID, store) == 420.0  # exactly at the limit: still a stop under way
    clock.intent(store, 420.5)
    assert leases.stopping_since(SID, store) is None and store.data == {}
    clock.intent(store, -60.0)  # the writer's clock runs a minute ahead: not yet "under way" for 60 s
    seen: dict[str, float] = {}
    assert leases.stopping_since(SID, store) == 0.0 and leases.stopping_since(SID, store, seen) == 0.0
    clock.mono += 120.0
    assert leases.stopping_since(SID, store, seen) == 120.0  # watched exactly 120 s: kept
    clock.mono += 0.5
    assert leases.stopping_since(SID, store, seen) is None and store.data == {}


def test_waiting_ends_when_this_host_has_watched_one_intent_for_120_s_even_if_its_clock_lies(
        monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    clock = FrozenClock(monkeypatch)
    store = MemoryStore()
    clock.intent(store, -3600.0)  # written by a host an hour ahead: by its clock alone it is never stale
    began = clock.mono
    with caplog.at_level(logging.INFO):
        leases.wait_while_stopping(SID, store, deadline=began + 600, log=logging.getLogger("w"), poll=10)
    assert clock.mono - began == 130.0 and store.data == {}, "gave up on the intent after 120 s, not the deadline"
    assert [r.getMessage() for r in caplog.records] == [
        f"service clara-svc-{SID} is being stopped; waiting, then starting it again"]
