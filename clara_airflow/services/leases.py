"""Per-run leases on shared services, safe without compare-and-set.

Each DAG run that uses a service writes its own Variable ``clara_lease_<id>_<run hash>``; nothing is
ever read-modify-written, so concurrent runs cannot lose each other's leases. A lease whose DAG run is
no longer queued or running (finished, killed, deleted) counts as released.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from clara_airflow.services.records import VariableStore, now, variable_store

LEASE_PREFIX = "clara_lease_"
LIVE_STATES = ("queued", "running")


def lease_key(sid: str, dag_id: str, run_id: str) -> str:
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:16]
    return f"{LEASE_PREFIX}{sid}_{digest}"


def take_lease(sid: str, dag_id: str, run_id: str, store: VariableStore | None = None) -> None:
    (store or variable_store()).set(lease_key(sid, dag_id, run_id), json.dumps(
        {"service": sid, "dag_id": dag_id, "run_id": run_id, "since": now()}))


def release_lease(sid: str, dag_id: str, run_id: str, store: VariableStore | None = None) -> None:
    store = store or variable_store()
    key = lease_key(sid, dag_id, run_id)
    if store.get(key) is not None:
        store.delete(key)


def leases(sid: str | None = None, store: VariableStore | None = None) -> list[dict[str, Any]]:
    store = store or variable_store()
    found = []
    for key in store.keys(LEASE_PREFIX + (f"{sid}_" if sid else "")):
        raw = store.get(key)
        if raw:
            try:
                found.append({**json.loads(raw), "key": key})
            except json.JSONDecodeError:
                continue
    return found


def run_state(dag_id: str, run_id: str) -> str | None:
    """The DAG run's state, through the Task SDK inside a task, else from the metadata database."""
    try:
        from airflow.sdk.execution_time import task_runner

        if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:
            return str(task_runner.RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id))
    except Exception:
        return None
    from airflow.models.dagrun import DagRun

    runs = DagRun.find(dag_id=dag_id, run_id=run_id)
    return str(runs[0].state) if runs else None


def live_leases(sid: str, store: VariableStore | None = None) -> list[dict[str, Any]]:
    """Leases on ``sid`` whose DAG run is still queued or running; stale ones are removed."""
    store = store or variable_store()
    live = []
    for lease in leases(sid, store):
        state = run_state(lease["dag_id"], lease["run_id"])
        if state in LIVE_STATES:
            live.append({**lease, "state": state})
        else:
            store.delete(lease["key"])
    return live
