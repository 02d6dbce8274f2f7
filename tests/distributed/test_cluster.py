"""50 concurrent runs of the demo pipeline (one shared inference service) on the CeleryExecutor cluster:
one service container, no failed run, no lease left. Figures go to artifacts/distributed.json."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.distributed.client import CLUSTER, DAG_ID, REPO, Api, demo_service_id, phantom, service_containers, when

pytestmark = [pytest.mark.distributed, pytest.mark.docker, pytest.mark.slow]
RUNS = int(os.environ.get("CLARA_DISTRIBUTED_RUNS", "50"))


def test_fifty_concurrent_runs_share_one_service_and_leave_no_lease(api: Api) -> None:
    payload = phantom()
    sid = demo_service_id()
    api.settle(DAG_ID)
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


@functools.cache
def celery_app() -> Any:
    """A Celery client on the cluster's broker (this process has the test suite's Airflow settings)."""
    from celery import Celery

    exports = dict(line.removeprefix("export ").split("=", 1) for line in (CLUSTER / "env").read_text().splitlines()
                   if line.startswith("export "))
    return Celery(broker=exports["AIRFLOW__CELERY__BROKER_URL"])


def active_on(worker: str) -> list[str]:
    """The Airflow task ids that ``worker`` runs now (from each Celery task's workload argument)."""
    import re

    replies = celery_app().control.inspect(destination=[worker], timeout=1).active() or {}
    return [found for tasks in replies.values() for task in tasks
            for found in re.findall(r'"task_id"\s*:\s*"([^"]+)"', str(task.get("args")))]


def stop_service(sid: str) -> None:
    """Stop the shared service the way a user does, so the runs' ensures start it (a real, slow ensure)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    done = subprocess.run(["bash", "-c", f'source "{CLUSTER}/env" && "{REPO}/.venv/bin/clara-airflow" services stop {sid}'],
                          capture_output=True, text=True, env=env)
    assert not service_containers(sid), done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["ensure", "step"])
def test_a_worker_killed_mid_run_leaves_no_second_service_and_no_lease(api: Api, kind: str) -> None:
    """kill -9 one worker's process tree while it runs a service ensure (the service being started) or
    a step: the runs finish through retries on the other worker, one service instance, no lease left;
    the restarted worker duplicates nothing."""
    import signal
    import socket

    payload = phantom()
    sid = demo_service_id()
    api.settle(DAG_ID)
    start = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True)
    assert start.returncode == 0, start.stderr[-3000:]  # both workers (an earlier failure may have left one dead)
    if kind == "ensure":
        stop_service(sid)
    wanted = (lambda task: task.startswith("clara_services.ensure_")) if kind == "ensure" else (
        lambda task: not task.startswith("clara_services."))
    run_ids = [f"kill-{kind}-{int(time.time())}-{n}" for n in range(6)]
    for run_id in run_ids:
        api.call(f"/api/v2/dags/{DAG_ID}/dagRuns",
                 {"dag_run_id": run_id, "logical_date": None, "conf": {"clara_payload": str(payload)}})
    worker = f"worker-1@{socket.gethostname()}"
    deadline = time.monotonic() + 180
    running = active_on(worker)
    while not any(wanted(task) for task in running):
        assert time.monotonic() < deadline, f"worker-1 never ran a {kind} task"
        running = active_on(worker)
    pid = int((CLUSTER / "pids" / "worker-1.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    killed = time.time()
    runs = api.wait_runs(DAG_ID, run_ids, seconds=1200)
    print(f"\nworker-1 killed while running {running}; all {len(run_ids)} runs ended "
          f"{time.time() - killed:.0f} s later: {sorted({r['state'] for r in runs.values()})}")
    assert {r["state"] for r in runs.values()} == {"success"}, {k: v["state"] for k, v in runs.items()}
    assert len(service_containers(sid)) == 1
    variables = api.call("/api/v2/variables?limit=1000")["variables"]
    assert not [v["key"] for v in variables if v["key"].startswith("clara_lease_")]
    restart = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr[-3000:]
    time.sleep(20)
    again = api.wait_runs(DAG_ID, run_ids, seconds=60)
    assert {r["state"] for r in again.values()} == {"success"} and len(service_containers(sid)) == 1
