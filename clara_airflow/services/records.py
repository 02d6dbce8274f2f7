"""The ``clara_service_<id>`` Variable records: a registry of facts, never a lock.

Inside a task the Task SDK's Variable is used; elsewhere (the CLI, the UI) the metadata database's.
Each write is an upsert of idempotent facts, so a lost race loses at most a ``last_used`` tick.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from clara_airflow.backends.base import ServiceInstance
from clara_airflow.compiler.identity import VARIABLE_PREFIX, service_name, variable_key
from clara_airflow.compiler.plan import ServicePlan


class VariableStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class _SdkStore:
    def get(self, key: str) -> str | None:
        from airflow.sdk import Variable

        value: str | None = Variable.get(key, default=None)
        return value

    def set(self, key: str, value: str) -> None:
        from airflow.sdk import Variable

        Variable.set(key, value, description="clara-airflow service record (registry, not a lock)")

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(key)

    def keys(self, prefix: str) -> list[str]:
        from airflow.sdk import Variable

        return list(Variable.keys(prefix=prefix))


class _DatabaseStore:
    def get(self, key: str) -> str | None:
        from airflow.models.variable import Variable

        value: str | None = Variable.get(key, default_var=None)
        return value

    def set(self, key: str, value: str) -> None:
        from airflow.models.variable import Variable

        Variable.set(key, value, description="clara-airflow service record (registry, not a lock)")

    def delete(self, key: str) -> None:
        from airflow.models.variable import Variable

        Variable.delete(key)

    def keys(self, prefix: str) -> list[str]:
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(Variable.key).filter(Variable.key.startswith(prefix)).all()
        return [row[0] for row in rows]


def variable_store() -> VariableStore:
    """The SDK's Variables inside a running task, the database's elsewhere."""
    try:
        from airflow.sdk.execution_time import task_runner

        if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:
            return _SdkStore()
    except ImportError:
        pass
    return _DatabaseStore()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def iso_seconds(text: str) -> str:
    """A backend timestamp (Docker's ``2026-11-24T18:31:17.026277504Z``) as ISO 8601 to the second."""
    try:
        moment = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError:
        return text
    return moment.isoformat(timespec="seconds")


def read_record(sid: str, store: VariableStore | None = None) -> dict[str, Any] | None:
    raw = (store or variable_store()).get(variable_key(sid))
    if not raw:
        return None
    try:
        record: dict[str, Any] = json.loads(raw)
        return record
    except json.JSONDecodeError:
        return {"id": sid, "corrupt": raw}


def read_records(store: VariableStore | None = None) -> list[dict[str, Any]]:
    store = store or variable_store()
    records = []
    for key in sorted(store.keys(VARIABLE_PREFIX)):
        record = read_record(key[len(VARIABLE_PREFIX):], store)
        if record is not None:
            records.append(record)
    return records


def record_use(svc: ServicePlan, instance: ServiceInstance, *, backend: str, dag_id: str, idle_ttl: int,
               connections: dict[str, str], location: dict[str, str] | None = None,
               store: VariableStore | None = None) -> dict[str, Any]:
    """Upsert the record of a service a run has just ensured; returns what was written.

    :param location: where the instance lives (Docker ``network``, Kubernetes ``namespace``), so that
        list, stop and the reaper address it there whatever the deployment defaults say.
    """
    store = store or variable_store()
    old = read_record(svc.id, store) or {}
    record = {
        "id": svc.id,
        "identity": {"image": svc.image, "tag": svc.tag, "command": list(svc.command)},
        "backend": backend,
        "location": location or {},
        "host": instance.host,
        "container": service_name(svc.id),
        "ports": sorted({p for _, p in svc.http if p}),
        "volumes": instance.volumes,
        "requests": {"cpu": svc.requests.cpu, "memory": svc.requests.memory, "gpu": svc.requests.gpu},
        "connections": {**old.get("connections", {}), **connections},
        "names": sorted({*old.get("names", []), *svc.names}),
        "pipelines": sorted({*old.get("pipelines", []), dag_id}),
        "started_at": iso_seconds(instance.started_at) if instance.started_at else old.get("started_at") or now(),
        "last_used": now(),
        "idle_ttl": max(idle_ttl, int(old.get("idle_ttl", 0))),
    }
    store.set(variable_key(svc.id), json.dumps(record, sort_keys=True))
    return record


def touch(sid: str, store: VariableStore | None = None) -> None:
    """Refresh ``last_used`` of an existing record."""
    store = store or variable_store()
    record = read_record(sid, store)
    if record is not None and "corrupt" not in record:
        record["last_used"] = now()
        store.set(variable_key(sid), json.dumps(record, sort_keys=True))


def clear_record(sid: str, store: VariableStore | None = None) -> None:
    (store or variable_store()).delete(variable_key(sid))
