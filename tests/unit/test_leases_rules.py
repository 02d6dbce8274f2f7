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
