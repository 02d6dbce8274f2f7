"""Service administration shared by the CLI, the UI and the reaper: list, stop, and collect.

Stops follow the handshake of :mod:`clara_airflow.services.leases`: write the stop intent, then read
the leases, and stop only when no run holds the service at that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clara_airflow import airflow_compat
from clara_airflow.backends.base import leftover_hint, remove_command
from clara_airflow.backends.registry import deployment_options, get_backend
from clara_airflow.compiler.identity import SERVICE_PREFIX, service_name
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services.identity import identified, is_foreign
from clara_airflow.services.leases import Holder, clear_stopping, live_leases, mark_stopping
from clara_airflow.services.records import (
    VariableStore,
    clear_record,
    parse_time,
    read_views,
    service_view,
    variable_store,
)
from clara_airflow.settings import Deployment, Options

STEP_GRACE = Deployment.step_grace  # the default of [clara] step_grace


def _options() -> Options:
    from clara_airflow.spec.defaults import pipeline_settings

    settings, deployment = deployment_options()
    return identified(Options(pipeline_settings(settings), deployment))


def managers(backends: set[str] | None = None) -> dict[str, Any]:
    """One service manager per backend in use (``[clara] backend`` and ``backends``), as configured."""
    options = _options()
    found = {}
    for name in sorted({options.pipeline.backend, *(backends or ())}):
        try:
            found[name] = get_backend(name, options).service_manager()
        except (ClaraAirflowError, ImportError):
            continue
    return found


def manager_for(row: dict[str, Any]) -> Any:
    """The manager of the backend, network or namespace a recorded service was started in."""
    location = row.get("location") or {}
    try:
        options = _options().located(network=location.get("network"), namespace=location.get("namespace"))
        return get_backend(row.get("backend", "docker"), options).service_manager()
    except (ClaraAirflowError, ImportError):
        return None


def _state(manager: Any, sid: str) -> str:
    try:
        return str(manager.status(sid))
    except Exception as exc:  # an unreachable engine or cluster must not hide the other services
        return f"unknown ({type(exc).__name__})"


def list_services(store: VariableStore | None = None) -> list[dict[str, Any]]:
    """Every recorded service with its live state, plus unrecorded (orphan) instances found by label."""
    store = store or variable_store()
    rows = []
    for view in read_views(store):
        row = view.as_row()
        manager = manager_for(row)
        row["state"] = _state(manager, view.id) if manager else "unknown (backend not installed)"
        if view.bad:
            row["state"] += " (bad record)"
        rows.append(row)
    recorded = {r["id"] for r in rows}
    for backend, manager in managers({r.get("backend", "docker") for r in rows}).items():
        try:
            managed = manager.list_managed()
        except Exception:
            continue
        ours = _options()
        for sid, found in managed.items():
            if sid in recorded:
                continue
            if is_foreign(found.deployment, ours):
                rows.append({"id": sid, "backend": backend, "age": found.age, "image": "?", "tag": "?", "names": [],
                             "state": f"{found.state} (foreign: deployment {found.deployment})",
                             "foreign": found.deployment})
            else:
                rows.append({"id": sid, "backend": backend, "state": f"{found.state} (orphan: no record)",
                             "age": found.age, "image": "?", "tag": "?", "names": [], "orphan": True})
    return rows


def _holder_row(h: Holder) -> dict[str, str]:
    return {"dag_id": h.dag_id, "run_id": h.run_id, "state": h.state}


def service_rows(store: VariableStore | None = None) -> list[dict[str, Any]]:
    """``list_services`` with the live leases of each service (the runs holding it now)."""
    store = store or variable_store()
    return [{**row, "leases": [_holder_row(h) for h in live_leases(row["id"], store)]} for row in list_services(store)]


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


def _held_text(sid: str, holders: list[Holder]) -> str:
    runs = ", ".join(f"{h.dag_id}/{h.run_id} ({h.state})" for h in holders)
    return f"service {service_name(sid)} is in use by DAG runs: {runs}"


def stop_guarded(row: dict[str, Any], *, force: bool, by: str, store: VariableStore,
                 still_wanted: Callable[[], bool] = lambda: True, volumes: bool = False,
                 after_intent: Callable[[], None] | None = None) -> str:
    """Stop one service unless a run holds it at the moment of the stop (``force``: even then).

    :param still_wanted: re-checked once the intent is written (the reaper re-reads the idle time).
    :param after_intent: a test hook, called between the intent and the lease read.
    :raises ClaraAirflowError: when runs hold it (and not ``force``), saying which.
    """
    sid = row["id"]
    mark_stopping(sid, by, store)
    try:
        if after_intent is not None:
            after_intent()
        holders = live_leases(sid, store)
        if holders and not force:
            raise ClaraAirflowError(_held_text(sid, holders) + "; wait for them or pass --force")
        if not still_wanted():
            return f"keeping {service_name(sid)}: used again while it was being stopped"
        manager = manager_for(row)
        stopped = bool(manager and manager.stop(sid))
        removed = manager.remove_volumes(sid) if manager and volumes else []
        if not row.get("orphan"):
            clear_record(sid, store)
    finally:
        clear_stopping(sid, store)
    return (f"stopped {service_name(sid)}" if stopped else f"{service_name(sid)} was not running") + \
        ("" if row.get("orphan") else "; record cleared") + \
        (f"; removed volume(s) {', '.join(removed)}" if removed else "; no volumes removed" if volumes else "")


def stop_service(ref: str, *, force: bool = False, volumes: bool = False, store: VariableStore | None = None) -> str:
    """Stop one service and clear its record; refuses while runs hold leases, unless ``force``.

    :param volumes: also remove the named volumes (Docker) or claims (Kubernetes) of its volume
        connections; by default they are kept, so a restarted service finds its data.
    """
    store = store or variable_store()
    row = resolve(ref, list_services(store))
    if row.get("foreign"):
        name = service_name(row["id"])
        raise ClaraAirflowError(f"{name} belongs to another clara-airflow deployment ('{row['foreign']}'); stop it "
                                "from that deployment (this one never touches it); "
                                + leftover_hint(remove_command("container", name), remove_command("Deployment", name)))
    return stop_guarded(row, force=force, by="clara-airflow services stop", store=store, volumes=volumes)


def idle_seconds(row: dict[str, Any], now: datetime | None = None) -> float:
    """Seconds since the service was last used; 0 when that is not known (never a reason to stop)."""
    moment = parse_time(row.get("last_used")) or parse_time(row.get("started_at"))
    if moment is None:
        return 0.0
    return ((now or datetime.now(UTC)) - moment).total_seconds()


def collect_services(*, dry_run: bool = False, remove_orphans: bool | None = None,
                     ttl_override: int | None = None, store: VariableStore | None = None) -> list[str]:
    """One reaper pass: stop services idle past their TTL with no live lease; report or remove orphans;
    remove step containers left behind by runs that have ended."""
    store = store or variable_store()
    options = _options()
    remove_orphans = options.deployment.remove_orphans if remove_orphans is None else remove_orphans
    start_timeout = float(options.pipeline.services.start_timeout)
    report = []
    for row in list_services(store):
        try:
            report.append(_collect_one(row, dry_run=dry_run, remove_orphans=remove_orphans,
                                       ttl_override=ttl_override, start_timeout=start_timeout, store=store))
        except Exception as exc:  # one unreachable backend must not stop the pass for the others
            report.append(f"error on {service_name(row['id'])} ({row.get('backend')}): {type(exc).__name__}: {exc}")
    report += collect_steps(dry_run=dry_run)
    return report or ["no services recorded"]


def _collect_one(row: dict[str, Any], *, dry_run: bool, remove_orphans: bool, ttl_override: int | None,
                 start_timeout: float, store: VariableStore) -> str:
    sid = row["id"]
    if row.get("foreign"):
        return f"leaving {service_name(sid)} alone: it belongs to deployment '{row['foreign']}'"
    if row.get("orphan"):
        return _collect_orphan(row, dry_run=dry_run, remove_orphans=remove_orphans, start_timeout=start_timeout,
                               store=store)
    if row.get("bad"):
        return (f"keeping {service_name(sid)}: bad record ({'; '.join(row['bad'])}); the next run that uses it "
                "rewrites it, or stop it with 'clara-airflow services stop'")
    ttl = int(row.get("idle_ttl", 3600)) if ttl_override is None else ttl_override
    holders = live_leases(sid, store)
    if holders:
        return f"keeping {service_name(sid)}: held by {len(holders)} DAG run(s)"
    idle = idle_seconds(row)
    if idle < ttl:
        return f"keeping {service_name(sid)}: idle {idle:.0f} s < ttl {ttl} s"
    if dry_run:
        return f"would stop {service_name(sid)}: idle {idle:.0f} s >= ttl {ttl} s"

    def still_idle() -> bool:
        return idle_seconds(service_view(sid, store).as_row()) >= ttl

    try:
        done = stop_guarded(row, force=False, by="clara_service_reaper", store=store, still_wanted=still_idle)
    except ClaraAirflowError:
        return f"keeping {service_name(sid)}: a run took it while the reaper looked"
    return f"{done} (idle {idle:.0f} s >= ttl {ttl} s)"


def _collect_orphan(row: dict[str, Any], *, dry_run: bool, remove_orphans: bool, start_timeout: float,
                    store: VariableStore) -> str:
    """An orphan is an instance with no record and no lease that is older than the start timeout: an
    instance younger than that may be one whose ensure has not written its record yet."""
    sid = row["id"]
    age = float(row.get("age", float("inf")))
    if age <= start_timeout or live_leases(sid, store):
        return f"keeping {service_name(sid)} ({row['state']}): it may still be starting (age {age:.0f} s)"
    if remove_orphans and not dry_run:
        try:
            stop_guarded(row, force=False, by="clara_service_reaper (orphan)", store=store,
                         still_wanted=lambda: service_view(sid, store).record is None)
        except ClaraAirflowError:
            return f"keeping orphan {service_name(sid)}: a run took it while the reaper looked"
        return f"removed orphan {service_name(sid)} ({row['state']}); no Variable recorded it"
    return f"found orphan {service_name(sid)} ({row['state']}); no Variable records it"


def collect_steps(*, dry_run: bool = False, grace: float | None = None,
                  state_of: Callable[[str, str], str] = airflow_compat.run_state) -> list[str]:
    """Step containers whose DAG run has ended (killed workers leave them ``Exited`` or ``Created``)."""
    report = []
    ours = _options()
    grace = ours.deployment.step_grace if grace is None else grace
    for backend, manager in managers().items():
        try:
            steps = manager.list_steps()
        except Exception as exc:
            report.append(f"cannot list step containers on {backend}: {type(exc).__name__}: {exc}")
            continue
        for step in steps:
            if is_foreign(step.deployment, ours):
                if dry_run:
                    report.append(f"leaving step container {step.name} alone: it belongs to deployment "
                                  f"'{step.deployment}'")
                continue
            if step.age < grace:
                continue
            state = state_of(step.dag_id, step.run_id)
            if state not in airflow_compat.ENDED_STATES:
                continue
            if not dry_run:
                manager.remove_step(step.ref)
            verb = "would remove" if dry_run else "removed"
            report.append(f"{verb} step container {step.name} ({step.state}) of {step.dag_id}/{step.run_id} "
                          f"(run {state})")
    return report
