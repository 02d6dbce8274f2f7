"""Service administration shared by the CLI and the UI: list, stop, and collect idle services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clara_airflow.backends.registry import deployment_options, get_backend
from clara_airflow.compiler.identity import SERVICE_PREFIX
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services.records import clear_record, read_records


def _options() -> dict[str, Any]:
    from clara_airflow.spec.defaults import merge_settings

    settings, options = deployment_options()
    return {**options, **merge_settings(settings)}


def managers(backends: set[str] | None = None) -> dict[str, Any]:
    """One service manager per backend in use (``[clara] backend`` and ``backends``), as configured."""
    options = _options()
    found = {}
    for name in sorted({options["backend"], *(backends or ())}):
        try:
            found[name] = get_backend(name, options).service_manager()
        except (ClaraAirflowError, ImportError):
            continue
    return found


def manager_for(row: dict[str, Any]) -> Any:
    """The manager of the backend, network or namespace a recorded service was started in."""
    location = row.get("location") or {}
    try:
        return get_backend(row.get("backend", "docker"), {**_options(), **location}).service_manager()
    except (ClaraAirflowError, ImportError):
        return None


def _state(manager: Any, sid: str) -> str:
    try:
        return str(manager.status(sid))
    except Exception as exc:  # an unreachable engine or cluster must not hide the other services
        return f"unknown ({type(exc).__name__})"


def list_services() -> list[dict[str, Any]]:
    """Every recorded service with its live state, plus unrecorded (orphan) instances found by label."""
    rows = []
    recorded = set()
    for record in read_records():
        sid = record["id"]
        recorded.add(sid)
        manager = manager_for(record)
        identity = record.get("identity", {})
        rows.append({**record, "image": identity.get("image", "?"), "tag": identity.get("tag", "?"),
                     "state": _state(manager, sid) if manager else "unknown (backend not installed)"})
    for backend, manager in managers({r.get("backend", "docker") for r in rows}).items():
        try:
            managed = manager.list_managed()
        except Exception:
            continue
        for sid, state in managed.items():
            if sid not in recorded:
                rows.append({"id": sid, "backend": backend, "state": f"{state} (orphan: no record)",
                             "image": "?", "tag": "?", "names": [], "orphan": True})
    return rows


def service_rows() -> list[dict[str, Any]]:
    """``list_services`` with the live leases of each service (the runs holding it now)."""
    from clara_airflow.services.leases import live_leases

    rows = []
    for row in list_services():
        holders = [] if row.get("orphan") else live_leases(row["id"])
        rows.append({**row, "leases": [{"dag_id": h["dag_id"], "run_id": h["run_id"], "state": h["state"]}
                                       for h in holders]})
    return rows


def resolve(ref: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A row by service id, instance name (``clara-svc-<id>``) or declared service name."""
    sid = ref[len(SERVICE_PREFIX):] if ref.startswith(SERVICE_PREFIX) else ref
    matches = [r for r in rows if r["id"] == sid] or [r for r in rows if ref in r.get("names", [])]
    if not matches:
        raise ClaraAirflowError(f"no service '{ref}'; 'clara-airflow services list' shows the ids")
    if len(matches) > 1:
        raise ClaraAirflowError(f"'{ref}' names several services ({', '.join(r['id'] for r in matches)}); "
                                "give the id")
    return matches[0]


def stop_service(ref: str, *, force: bool = False, volumes: bool = False) -> str:
    """Stop one service and clear its record; refuses while runs hold leases, unless ``force``.

    :param volumes: also remove the named volumes (Docker) or claims (Kubernetes) of its volume
        connections; by default they are kept, so a restarted service finds its data.
    """
    from clara_airflow.services.leases import live_leases

    row = resolve(ref, list_services())
    holders = live_leases(row["id"])
    if holders and not force:
        runs = ", ".join(f"{h['dag_id']}/{h['run_id']}" for h in holders)
        raise ClaraAirflowError(f"service clara-svc-{row['id']} is in use by running DAG runs ({runs}); "
                                "wait for them or pass --force")
    manager = manager_for(row)
    stopped = bool(manager and manager.stop(row["id"]))
    removed = manager.remove_volumes(row["id"]) if manager and volumes else []
    if not row.get("orphan"):
        clear_record(row["id"])
    return (f"stopped clara-svc-{row['id']}" if stopped else f"clara-svc-{row['id']} was not running") + \
        ("" if row.get("orphan") else "; record cleared") + \
        (f"; removed volume(s) {', '.join(removed)}" if removed else "; no volumes removed" if volumes else "")


def idle_seconds(record: dict[str, Any], now: datetime | None = None) -> float:
    last = record.get("last_used") or record.get("started_at")
    if not last:
        return float("inf")
    moment = datetime.fromisoformat(last)
    return ((now or datetime.now(UTC)) - moment).total_seconds()


def collect_services(*, dry_run: bool = False, remove_orphans: bool | None = None,
                     ttl_override: int | None = None) -> list[str]:
    """One reaper pass: stop services idle past their TTL with no live lease; report orphans."""
    _, options = deployment_options()
    remove_orphans = bool(options["remove_orphans"]) if remove_orphans is None else remove_orphans
    report = []
    for row in list_services():
        try:
            report.append(_collect_one(row, dry_run=dry_run, remove_orphans=remove_orphans, ttl_override=ttl_override))
        except Exception as exc:  # one unreachable backend must not stop the pass for the others
            report.append(f"error on clara-svc-{row['id']} ({row.get('backend')}): {type(exc).__name__}: {exc}")
    return report or ["no services recorded"]


def _collect_one(row: dict[str, Any], *, dry_run: bool, remove_orphans: bool, ttl_override: int | None) -> str:
    from clara_airflow.services.leases import live_leases

    sid = row["id"]
    if row.get("orphan"):
        if remove_orphans and not dry_run:
            managers({row["backend"]})[row["backend"]].stop(sid)
            return f"removed orphan clara-svc-{sid} ({row['state']}); no Variable recorded it"
        return f"found orphan clara-svc-{sid} ({row['state']}); no Variable records it"
    ttl = int(row.get("idle_ttl", 3600)) if ttl_override is None else ttl_override
    idle = idle_seconds(row)
    holders = live_leases(sid)
    if holders:
        return f"keeping clara-svc-{sid}: held by {len(holders)} running DAG run(s)"
    if idle < ttl:
        return f"keeping clara-svc-{sid}: idle {idle:.0f} s < ttl {ttl} s"
    if dry_run:
        return f"would stop clara-svc-{sid}: idle {idle:.0f} s >= ttl {ttl} s"
    stop_service(sid, force=True)
    return f"stopping clara-svc-{sid}: idle {idle:.0f} s >= ttl {ttl} s"
