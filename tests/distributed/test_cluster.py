"""50 concurrent runs of the demo pipeline (one shared inference service) on the CeleryExecutor cluster:
one service container, no failed run, no lease left. Figures go to artifacts/distributed.json."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.spec.load import load_pipeline
from tests.distributed.conftest import CLUSTER, REPO, Api

pytestmark = [pytest.mark.distributed, pytest.mark.docker, pytest.mark.slow]
DAG_ID = "ct-organ-triage"
RUNS = int(os.environ.get("CLARA_DISTRIBUTED_RUNS", "50"))


def phantom() -> Path:
    folder = CLUSTER / "payload" / "chest-ct-001"
    if not any(folder.glob("*.dcm")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{folder}:/out", "clara-airflow/demo-ops:0.1", "python3",
                        "/opt/clara/ops/make_phantom.py", "/out"], check=True, capture_output=True)
    return folder


def service_containers(sid: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label=clara-airflow/service-id={sid}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def when(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else float("inf")


def test_fifty_concurrent_runs_share_one_service_and_leave_no_lease(api: Api) -> None:
    payload = phantom()
    sid = compile_pipeline(load_pipeline(REPO / "dags" / "pipelines" / f"{DAG_ID}.yaml")).services[0].id
    stamp = int(time.time())
    run_ids = [f"load-{stamp}-{n:02d}" for n in range(RUNS)]

    def trigger(run_id: str) -> Any:
        return api.call(f"/api/v2/dags/{DAG_ID}/dagRuns",
                        {"dag_run_id": run_id, "logical_date": None, "conf": {"clara_payload": str(payload)}})

    began = time.time()
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(trigger, run_ids))
    triggered = time.time() - began
    runs = api.wait_runs(DAG_ID, run_ids, seconds=3600)
    wall = time.time() - began
    failed = sorted(r for r, data in runs.items() if data["state"] != "success")
    firsts = []
    for run_id in run_ids:
        tis = api.call(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        steps = [when(t["start_date"]) for t in tis if not t["task_id"].startswith("clara_services.")]
        firsts.append(min(steps) - began)
    variables = api.call("/api/v2/variables?limit=1000")["variables"]
    leases = [v["key"] for v in variables if v["key"].startswith("clara_lease_")]
    figures = {"runs": RUNS, "failed": failed, "service_containers": len(service_containers(sid)),
               "leases_left": leases, "wall_s": round(wall, 1), "trigger_s": round(triggered, 1),
               "first_step_after_trigger_s": round(min(firsts), 1), "last_first_step_s": round(max(firsts), 1),
               "runs_per_hour": round(3600 * RUNS / wall)}
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "distributed.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert not failed, figures
    assert figures["service_containers"] == 1, figures
    assert not leases, figures
