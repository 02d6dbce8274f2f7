"""Service records in Airflow Variables: a registry of facts, never a lock.

Variables have no compare-and-set, so no key is ever read, merged and written back by two parties
that could disagree:

- ``clara_service_<id>`` (:class:`ServiceRecord`) holds the facts of the *instance*: its identity,
  where it lives, its ports and requests. Every ensure of that identity writes the same facts, so a
  lost race loses nothing.
- ``clara_use_<id>_<hash of dag id>`` (:class:`ServiceUse`) holds what one *pipeline* declared for it:
  service names, connection values, idle TTL and its last use. Pipelines never share a key.
- Leases (``clara_lease_*``, :mod:`clara_airflow.services.leases`) are per run.

:func:`service_view` joins them for the CLI, the page and the reaper. Every Variable is read through
one parser; a Variable of the wrong shape is a :class:`BadRecord`, shown as bad and never a reason to
stop a service or to fail a run (the next ensure rewrites it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from clara_airflow.backends.base import ServiceInstance
from clara_airflow.compiler.identity import VARIABLE_PREFIX, service_name, variable_key
from clara_airflow.compiler.plan import ServicePlan

SCHEMA = 1
USE_PREFIX = "clara_use_"
DEFAULT_IDLE_TTL = 3600


class VariableStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


def variable_store() -> VariableStore:
    """The Task SDK's Variables inside a running task, the metadata database's elsewhere."""
    from clara_airflow import airflow_compat

    store: VariableStore = airflow_compat.variable_store()
    return store


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def iso_seconds(text: str) -> str:
    """A backend timestamp (Docker's ``2026-11-24T18:31:17.026277504Z``) as ISO 8601 to the second."""
    try:
        moment = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError:
        return text
    return moment.isoformat(timespec="seconds")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BadRecord:
    """A Variable that is not a record of this schema: shown as bad, never acted on."""

    key: str
    reason: str
    raw: str = ""


@dataclass(frozen=True)
class ServiceRecord:
    """``clara_service_<id>``: facts of one service instance (schema 1).

    :param identity: ``{"image", "tag", "command"}`` after parameter substitution.
    :param location: where it lives (Docker ``network``, Kubernetes ``namespace``).
    :param host: the name steps reach it by. :param volumes: container path -> volume name.
    """

    id: str
    identity: dict[str, Any]
    backend: str
    location: dict[str, str]
    host: str
    ports: list[int]
    volumes: dict[str, str]
    requests: dict[str, int]
    started_at: str
    last_used: str
    devices: list[str] = field(default_factory=list)  # the host's GPUs it holds (Docker with [clara] gpus)
    schema: int = SCHEMA

    @property
    def container(self) -> str:
        return service_name(self.id)


@dataclass(frozen=True)
class ServiceUse:
    """``clara_use_<id>_<dag hash>``: what one pipeline declared for a service (schema 1)."""

    service: str
    dag_id: str
    names: list[str]
    connections: dict[str, str]
    idle_ttl: int
    last_used: str
    schema: int = SCHEMA


def _fields(data: Any, kind: type, key: str) -> Any:
    """``kind`` built from a decoded Variable, or a BadRecord saying what is wrong with it."""
    if not isinstance(data, dict):
        return BadRecord(key, f"not a JSON object but {type(data).__name__}")
    if data.get("schema", SCHEMA) != SCHEMA:
        return BadRecord(key, f"schema {data.get('schema')!r} is not {SCHEMA} (written by another version)")
    fields = dataclasses.fields(kind)
    wanted = {f.name: f.type for f in fields if f.name != "key"}
    missing = [f.name for f in fields if f.name not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        return BadRecord(key, f"missing {', '.join(missing)}")
    values = {name: data[name] for name in wanted if name in data}
    checks = {"str": str, "int": int, "list[str]": list, "list[int]": list, "dict[str, Any]": dict,
              "dict[str, str]": dict, "dict[str, int]": dict}
    for name, value in values.items():
        expected = checks.get(str(wanted[name]))
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            return BadRecord(key, f"field {name!r} is {type(value).__name__}, not {wanted[name]}")
    return kind(**values)


def parse(key: str, raw: str | None, kind: type) -> Any:
    """The one parser of clara-airflow's Variables: a ``kind`` instance, a BadRecord, or None if absent."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return BadRecord(key, "not JSON", raw[:200])
    found = _fields(data, kind, key)
    return BadRecord(found.key, found.reason, raw[:200]) if isinstance(found, BadRecord) else found


def use_key(sid: str, dag_id: str) -> str:
    return f"{USE_PREFIX}{sid}_{hashlib.sha256(dag_id.encode()).hexdigest()[:16]}"


def read_record(sid: str, store: VariableStore | None = None) -> ServiceRecord | BadRecord | None:
    key = variable_key(sid)
    result: ServiceRecord | BadRecord | None = parse(key, (store or variable_store()).get(key), ServiceRecord)
    return result


def read_uses(sid: str, store: VariableStore) -> list[ServiceUse | BadRecord]:
    found = []
    for key in sorted(store.keys(f"{USE_PREFIX}{sid}_")):
        use = parse(key, store.get(key), ServiceUse)
        if use is not None:
            found.append(use)
    return found


def write_record(svc: ServicePlan, instance: ServiceInstance, *, backend: str, location: dict[str, str],
                 store: VariableStore) -> ServiceRecord:
    """The instance's facts; the same for every ensure of this identity, so concurrent writes agree."""
    record = ServiceRecord(
        id=svc.id, identity={"image": svc.image, "tag": svc.tag, "command": list(svc.command)}, backend=backend,
        location=location, host=instance.host, ports=svc.ports,
        volumes=dict(instance.volumes),
        requests={"cpu": svc.requests.cpu, "memory": svc.requests.memory, "gpu": svc.requests.gpu},
        started_at=iso_seconds(instance.started_at) if instance.started_at else now(), last_used=now(),
        devices=list(instance.devices),
    )
    store.set(variable_key(svc.id), json.dumps(asdict(record), sort_keys=True))
    return record


def write_use(svc: ServicePlan, *, dag_id: str, connections: dict[str, str], idle_ttl: int,
              store: VariableStore) -> ServiceUse:
    """This pipeline's use of the service, in a key no other pipeline writes."""
    use = ServiceUse(service=svc.id, dag_id=dag_id, names=sorted(svc.names), connections=dict(connections),
                     idle_ttl=int(idle_ttl), last_used=now())
    store.set(use_key(svc.id, dag_id), json.dumps(asdict(use), sort_keys=True))
    return use


def record_use(svc: ServicePlan, instance: ServiceInstance, *, backend: str, dag_id: str, idle_ttl: int,
               connections: dict[str, str], location: dict[str, str] | None = None,
               store: VariableStore | None = None) -> ServiceView:
    """Record the instance and this pipeline's use of it; returns the joined view."""
    store = store or variable_store()
    write_record(svc, instance, backend=backend, location=location or {}, store=store)
    write_use(svc, dag_id=dag_id, connections=connections, idle_ttl=idle_ttl, store=store)
    return service_view(svc.id, store)


def touch(sid: str, dag_id: str, store: VariableStore | None = None) -> None:
    """Refresh ``last_used`` of this pipeline's use of ``sid`` (runs of one pipeline write the same facts)."""
    store = store or variable_store()
    key = use_key(sid, dag_id)
    use = parse(key, store.get(key), ServiceUse)
    if isinstance(use, ServiceUse):
        store.set(key, json.dumps({**asdict(use), "last_used": now()}, sort_keys=True))


def clear_record(sid: str, store: VariableStore | None = None) -> None:
    """Forget a stopped service: its record and every pipeline's use of it."""
    store = store or variable_store()
    for key in [variable_key(sid), *store.keys(f"{USE_PREFIX}{sid}_")]:
        if store.get(key) is not None:
            store.delete(key)


@dataclass(frozen=True)
class ServiceView:
    """A service as people and the reaper see it: its record joined with every pipeline's use.

    :param bad: the Variables of this service that could not be read (shown, never acted on).
    """

    id: str
    record: ServiceRecord | None
    uses: tuple[ServiceUse, ...] = ()
    bad: tuple[BadRecord, ...] = field(default=())

    @property
    def idle_ttl(self) -> int:
        return max((u.idle_ttl for u in self.uses), default=DEFAULT_IDLE_TTL)

    @property
    def last_used(self) -> str:
        times = [self.record.last_used] if self.record else []
        times += [u.last_used for u in self.uses]
        parsed = [t for t in times if parse_time(t)]
        return max(parsed, key=lambda t: parse_time(t) or datetime.min.replace(tzinfo=UTC), default="")

    def as_row(self) -> dict[str, Any]:
        """The dict the CLI, the page and the JSON API show (keys kept from schema-less records)."""
        rec = self.record
        identity = rec.identity if rec else {}
        connections: dict[str, str] = {}
        for use in self.uses:
            connections.update(use.connections)
        row: dict[str, Any] = {
            "id": self.id, "identity": identity, "image": identity.get("image", "?"),
            "tag": identity.get("tag", "?"), "backend": rec.backend if rec else "docker",
            "location": rec.location if rec else {}, "host": rec.host if rec else service_name(self.id),
            "container": service_name(self.id), "ports": rec.ports if rec else [],
            "volumes": rec.volumes if rec else {}, "requests": rec.requests if rec else {},
            "devices": rec.devices if rec else [],
            "started_at": rec.started_at if rec else "", "last_used": self.last_used,
            "idle_ttl": self.idle_ttl, "connections": connections,
            "names": sorted({n for u in self.uses for n in u.names}),
            "pipelines": sorted({u.dag_id for u in self.uses}),
        }
        if self.bad:
            row["bad"] = [f"{b.key}: {b.reason}" for b in self.bad]
        return row


def service_view(sid: str, store: VariableStore | None = None) -> ServiceView:
    store = store or variable_store()
    record = read_record(sid, store)
    uses = read_uses(sid, store)
    bad = [x for x in (record, *uses) if isinstance(x, BadRecord)]
    return ServiceView(id=sid, record=record if isinstance(record, ServiceRecord) else None,
                       uses=tuple(u for u in uses if isinstance(u, ServiceUse)), bad=tuple(bad))


def recorded_ids(store: VariableStore | None = None) -> list[str]:
    """Every service id with a record or a use, read or not."""
    store = store or variable_store()
    ids = {key[len(VARIABLE_PREFIX):] for key in store.keys(VARIABLE_PREFIX)}
    ids |= {key[len(USE_PREFIX):].rsplit("_", 1)[0] for key in store.keys(USE_PREFIX)}
    return sorted(i for i in ids if i)


def read_views(store: VariableStore | None = None) -> list[ServiceView]:
    store = store or variable_store()
    return [service_view(sid, store) for sid in recorded_ids(store)]
