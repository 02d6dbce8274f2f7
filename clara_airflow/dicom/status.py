"""``clara-airflow dicom status`` and ``dicom retry``: what the receiver holds on disk, read from its
folders (the receiver may be running or not), and failed triggers put back to be sent again."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import DicomConfig
from clara_airflow.dicom.groups import Folders, instances
from clara_airflow.dicom.trigger import AirflowClient, records
from clara_airflow.durable import write_file

__all__ = ["check_dags", "render", "retry", "retry_failed", "status"]

log = logging.getLogger("clara_airflow.dicom")


def _group(called: str, folder: Path, state: str, now: float) -> dict[str, Any]:
    files = instances(folder)
    newest = max((p.stat().st_mtime for p in files), default=folder.stat().st_mtime)
    return {"ae_title": called, "uid": folder.name, "instances": len(files),
            "quiet_seconds": round(max(0.0, now - newest), 1), "state": state}


def _groups(folders: Folders, now: float) -> list[dict[str, Any]]:
    found = []
    for root, state in ((folders.gathering, "gathering"), (folders.quarantine, "quarantined"),
                        (folders.unrouted_root, "unrouted")):
        for called in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
            found += [_group(called.name, g, state, now) for g in sorted(called.iterdir()) if g.is_dir()]
    # instances of associations still open (or left by a killed receiver): their groups are gathering too
    for association in sorted(folders.incoming.iterdir()) if folders.incoming.is_dir() else ():
        for called in (p for p in association.iterdir() if p.is_dir()):
            found += [_group(called.name, g, "gathering", now) for g in sorted(called.iterdir()) if g.is_dir()]
    return found


def status(config: DicomConfig, *, airflow: bool = True) -> dict[str, Any]:
    """The receiver's state: groups, triggers, disk, and (``airflow``) the routed DAGs as Airflow sees them."""
    folders = Folders(config.inbox)
    now = time.time()
    free = shutil.disk_usage(folders.inbox).free // 2**20 if folders.inbox.is_dir() else 0
    pending = [{"run_id": r["run_id"], "pipeline": r["dag_id"], "attempts": int(r.get("attempts", 0)),
                "last_error": r.get("last_error", "")} for r in records(folders.spool)]
    failed = [{"run_id": r["run_id"], "pipeline": r["dag_id"], "reason": r.get("reason", "")}
              for r in records(folders.spool.parent / "failed-triggers")]
    result: dict[str, Any] = {
        "groups": _groups(folders, now), "triggers": {"pending": pending, "failed": failed},
        "disk": {"free_mb": free, "min_free_mb": config.min_free_disk_mb},
    }
    if airflow:
        result["dags"] = check_dags(config, AirflowClient(config.airflow, timeout=5.0))
    return result


def render(found: dict[str, Any]) -> str:
    """The status for people: one line per group, trigger and DAG that is not active."""
    lines = []
    for g in found["groups"]:
        lines.append(f"group  {g['state']:<11} {g['ae_title']}/{g['uid']}  {g['instances']} instances, quiet "
                     f"{g['quiet_seconds']:.0f} s")
    for t in found["triggers"]["pending"]:
        why = f", last error: {t['last_error']}" if t["last_error"] else ""
        lines.append(f"run    pending     {t['pipeline']} {t['run_id']}  {t['attempts']} attempts{why}")
    for t in found["triggers"]["failed"]:
        lines.append(f"run    failed      {t['pipeline']} {t['run_id']}  {t['reason']}")
    for dag, state in sorted(found.get("dags", {}).items()):
        if state != "active":
            lines.append(f"dag    {state.split(':')[0]:<11} {dag}  {state}")
    disk = found["disk"]
    low = "  LOW: associations are refused" if disk["free_mb"] < disk["min_free_mb"] else ""
    lines.append(f"disk   {disk['free_mb']} MiB free (min_free_disk_mb {disk['min_free_mb']}){low}")
    return "\n".join(lines)


def retry_failed(config: DicomConfig, run_id: str | None) -> list[str]:
    """Move failed triggers back to pending (all with None); a running receiver picks them up within
    seconds, a stopped one at its start."""
    return retry(Folders(config.inbox).spool, run_id)


def retry(spool: Path, run_id: str | None) -> list[str]:
    """Move failed triggers (``run_id``, or all with None) back to ``spool``; returns the run ids moved."""
    moved = []
    for record in records(spool.parent / "failed-triggers"):
        if run_id is not None and record["run_id"] != run_id:
            continue
        path: Path = record.pop("_path")
        record.pop("reason", None)
        write_file(spool / path.name, json.dumps({**record, "attempts": 0, "last_error": ""}), mode=0o600)
        path.unlink()
        moved.append(record["run_id"])
    return moved


def check_dags(config: DicomConfig, client: AirflowClient) -> dict[str, str]:
    """The state of every routed DAG in Airflow (``active``, ``paused``, ``missing``, ``unknown: ...``);
    logs each one that cannot start runs."""
    states = {}
    for pipeline in sorted({p for route in config.ae_titles.values() for p in route.every_pipeline()}):
        states[pipeline] = state = client.dag_state(pipeline)
        if state == "missing":
            log.error("routed DAG %s does not exist in Airflow: its triggers will fail (HTTP 404); deploy the "
                      "pipeline or fix ae_titles", pipeline)
        elif state == "paused":
            log.warning("routed DAG %s is paused: the runs the receiver starts stay queued until it is unpaused "
                        "(airflow dags unpause %s)", pipeline, pipeline)
    return states
