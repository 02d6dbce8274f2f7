"""Per-run leases on shared services, and the stop protocol that keeps the reaper off held services.

Each DAG run that uses a service writes its own Variable ``clara_lease_<id>_<run hash>``; nothing is
ever read-modify-written, so concurrent runs cannot lose each other's leases. A lease is released
only when its DAG run is *read* as ended (a final state, or the run no longer exists). A state that
cannot be read, or a lease Variable of the wrong shape, counts as held.

Stopping without compare-and-set: the stopper and the ensuring run each write their own flag, then
read the other's (a two-flag handshake, sequentially consistent through the metadata database).

- ensure: write the lease, *then* wait while a stop intent ``clara_stopping_<id>`` exists;
- stop: write the stop intent, *then* read the leases; stop only if none is live, then remove the intent.

If the stopper's lease read missed the lease, the lease was written after the intent, so the ensure's
intent read sees the intent and waits until the stop is over, then starts a fresh instance. A run that
holds a lease is therefore never stopped under.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from clara_airflow import airflow_compat
from clara_airflow.services.records import BadRecord, VariableStore, now, parse, parse_time, variable_store

LEASE_PREFIX = "clara_lease_"
STOP_PREFIX = "clara_stopping_"
ENDED_STATES = airflow_compat.ENDED_STATES  # read as plain text inside tasks and out (airflow_compat.plain_state)
STOP_INTENT_STALE = 120.0  # a stopper that died mid-stop: its intent is ignored after this many seconds
CLOCK_SKEW = 300.0  # how far the clocks of two hosts (a stopper's, an ensure's) may differ, at most


@dataclass(frozen=True)
class Lease:
    """``clara_lease_<id>_<hash>``: run ``run_id`` of ``dag_id`` uses service ``service`` (schema 1)."""

    service: str
    dag_id: str
    run_id: str
    since: str
    schema: int = 1
    key: str = field(default="", compare=False)


@dataclass(frozen=True)
class Holder:
    """A lease that still holds its service. :param state: the run's state, ``unknown``, or ``bad lease``."""

    key: str
    dag_id: str
    run_id: str
    state: str


def lease_key(sid: str, dag_id: str, run_id: str) -> str:
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:16]
    return f"{LEASE_PREFIX}{sid}_{digest}"


def take_lease(sid: str, dag_id: str, run_id: str, store: VariableStore | None = None) -> None:
    lease = {"service": sid, "dag_id": dag_id, "run_id": run_id, "since": now(), "schema": 1}
    (store or variable_store()).set(lease_key(sid, dag_id, run_id), json.dumps(lease))


def release_lease(sid: str, dag_id: str, run_id: str, store: VariableStore | None = None) -> None:
    store = store or variable_store()
    key = lease_key(sid, dag_id, run_id)
    if store.get(key) is not None:
        store.delete(key)


def leases(sid: str | None = None, store: VariableStore | None = None) -> list[Lease | BadRecord]:
    store = store or variable_store()
    found = []
    for key in sorted(store.keys(LEASE_PREFIX + (f"{sid}_" if sid else ""))):
        lease = parse(key, store.get(key), Lease)
        if lease is not None:
            found.append(lease if isinstance(lease, BadRecord) else replace(lease, key=key))
    return found


def live_leases(sid: str, store: VariableStore | None = None,
                state_of: Callable[[str, str], str] = airflow_compat.run_state) -> list[Holder]:
    """Leases on ``sid`` that still hold it; leases of runs read as ended are removed."""
    store = store or variable_store()
    live = []
    for lease in leases(sid, store):
        if isinstance(lease, BadRecord):
            live.append(Holder(lease.key, "?", "?", f"bad lease ({lease.reason}); delete the Variable to release it"))
            continue
        state = state_of(lease.dag_id, lease.run_id)
        if state in ENDED_STATES:
            store.delete(lease.key)
        else:
            live.append(Holder(lease.key, lease.dag_id, lease.run_id, state))
    return live


# -- the stop protocol ---------------------------------------------------------------------------------
def stop_key(sid: str) -> str:
    return STOP_PREFIX + sid


def mark_stopping(sid: str, by: str, store: VariableStore) -> None:
    store.set(stop_key(sid), json.dumps({"service": sid, "by": by, "since": now(), "token": uuid.uuid4().hex}))


def clear_stopping(sid: str, store: VariableStore) -> None:
    if store.get(stop_key(sid)) is not None:
        store.delete(stop_key(sid))


def stopping_since(sid: str, store: VariableStore, first_seen: dict[str, float] | None = None) -> float | None:
    """Seconds a stop of ``sid`` has been under way, or None when none is (stale intents are dropped).

    Clocks of different hosts are never trusted to agree: an intent is stale once *this* reader has seen
    the same intent for :data:`STOP_INTENT_STALE` seconds on its own monotonic clock (``first_seen`` keeps
    those sightings across calls), or once the writer's own ``since`` is older than
    ``STOP_INTENT_STALE + CLOCK_SKEW`` (an intent left days ago goes at once; two hosts' clocks may differ
    by up to :data:`CLOCK_SKEW` seconds without a live stop being taken for a dead one).
    """
    raw = store.get(stop_key(sid))
    if raw is None:
        return None
    try:
        intent = json.loads(raw)
        began = parse_time(intent.get("since"))
    except (ValueError, AttributeError):
        began = None
    if began is None:  # unreadable: no stopper can be relying on it
        clear_stopping(sid, store)
        return None
    written_age = (datetime.now(UTC) - began).total_seconds()
    seen = 0.0
    if first_seen is not None:
        seen = time.monotonic() - first_seen.setdefault(str(intent.get("token") or raw), time.monotonic())
    if written_age > STOP_INTENT_STALE + CLOCK_SKEW or seen > STOP_INTENT_STALE:
        clear_stopping(sid, store)
        return None
    return max(seen, written_age, 0.0)


def wait_while_stopping(sid: str, store: VariableStore, *, deadline: float, log: Any,
                        poll: float = 0.25) -> None:
    """The ensure side of the handshake: called after the lease is written."""
    announced = False
    sightings: dict[str, float] = {}
    while stopping_since(sid, store, sightings) is not None:
        if not announced:
            log.info("service clara-svc-%s is being stopped; waiting, then starting it again", sid)
            announced = True
        if time.monotonic() > deadline:
            return  # the stop intent is at most STOP_INTENT_STALE old; the ensure replaces what it finds
        time.sleep(poll)
