"""Service administration shared by the CLI and the UI: list, stop, and collect idle services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clara_airflow.backends.registry import deployment_options, get_backend
from clara_airflow.compiler.identity import SERVICE_PREFIX
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services.records import clear_record, read_records


def _managers() -> dict[str, Any]:
    settings, options = deployment_options()
    found = {}
    for name in ("docker", "kubernetes"):
        try:
            found[name] = get_backend(name, {**options, **settings}).service_manager()
        except (ClaraAirflowError, ImportError):
            continue
    return found


def _state(manager: Any, sid: str) -> str:
    try:
        return str(manager.status(sid))
    except Exception as exc:  # an unreachable engine must not hide the other services
        return f"unknown ({type(exc).__name__})"


def list_services() -> list[dict[str, Any]]:
    """Every recorded service with its live state, plus unrecorded (orphan) instances found by label."""
    managers = _managers()
    rows = []
    recorded = set()
    for record in read_records():
        sid = record["id"]
        recorded.add(sid)
        manager = managers.get(record.get("backend", "docker"))
        identity = record.get("identity", {})
        rows.append({**record, "image": identity.get("image", "?"), "tag": identity.get("tag", "?"),
                     "state": _state(manager, sid) if manager else "unknown (backend not installed)"})
    for backend, manager in managers.items():
        try:
            managed = manager.list_managed()
        except Exception:
            continue
        for sid, state in managed.items():
            if sid not in recorded:
                rows.append({"id": sid, "backend": backend, "state": f"{state} (orphan: no record)",
                             "image": "?", "tag": "?", "names": [], "orphan": True})
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


def stop_service(ref: str, *, force: bool = False) -> str:
    """Stop one service and clear its record; refuses while runs hold leases, unless ``force``."""
    from clara_airflow.services.leases import live_leases

    row = resolve(ref, list_services())
    holders = live_leases(row["id"])
    if holders and not force:
        runs = ", ".join(f"{h['dag_id']}/{h['run_id']}" for h in holders)
        raise ClaraAirflowError(f"service clara-svc-{row['id']} is in use by running DAG runs ({runs}); "
                                "wait for them or pass --force")
    manager = _managers().get(row.get("backend", "docker"))
    stopped = bool(manager and manager.stop(row["id"]))
    if not row.get("orphan"):
        clear_record(row["id"])
    return (f"stopped clara-svc-{row['id']}" if stopped else f"clara-svc-{row['id']} was not running") + \
        ("" if row.get("orphan") else "; record cleared")


def idle_seconds(record: dict[str, Any], now: datetime | None = None) -> float:
    last = record.get("last_used") or record.get("started_at")
    if not last:
        return float("inf")
    moment = datetime.fromisoformat(last)
    return ((now or datetime.now(UTC)) - moment).total_seconds()


def collect_services(*, dry_run: bool = False, remove_orphans: bool | None = None,
                     ttl_override: int | None = None) -> list[str]:
    """One reaper pass: stop services idle past their TTL with no live lease; report orphans."""
    from clara_airflow.services.leases import live_leases

    _, options = deployment_options()
    remove_orphans = bool(options["remove_orphans"]) if remove_orphans is None else remove_orphans
    report = []
    for row in list_services():
        sid = row["id"]
        if row.get("orphan"):
            action = "removing" if remove_orphans and not dry_run else "found"
            report.append(f"{action} orphan clara-svc-{sid} ({row['state']}); no Variable records it")
            if remove_orphans and not dry_run:
                _managers()[row["backend"]].stop(sid)
            continue
        ttl = int(row.get("idle_ttl", 3600)) if ttl_override is None else ttl_override
        idle = idle_seconds(row)
        holders = live_leases(sid)
        if holders:
            report.append(f"keeping clara-svc-{sid}: held by {len(holders)} running DAG run(s)")
        elif idle >= ttl:
            report.append(f"{'would stop' if dry_run else 'stopping'} clara-svc-{sid}: idle {idle:.0f} s >= ttl {ttl} s")
            if not dry_run:
                stop_service(sid, force=True)
        else:
            report.append(f"keeping clara-svc-{sid}: idle {idle:.0f} s < ttl {ttl} s")
    return report or ["no services recorded"]
