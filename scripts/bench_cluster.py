"""Cluster benchmark: the same 20-run workload under the LocalExecutor and under the CeleryExecutor cluster.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_cluster.py [--runs 20] [--studies 50]

Both sides are ``scripts/cluster.sh`` on this machine, one after the other in one invocation: the same
PostgreSQL, api-server, scheduler, dag-processor and triggerer, 16 task slots each (the LocalExecutor's
parallelism; two Celery workers of concurrency 8), the same Docker engine and images. Only the executor
differs. The workload: a 3-step pipeline whose middle step calls one shared service, ``--runs`` runs
triggered together through the REST API, after one untimed warm-up run (the service is started there, so
both sides find it running). On the Celery cluster it then runs one batch over ``--studies`` studies.

Prints the wall time of each side, their ratio (target: Celery <= 1.3x the LocalExecutor), runs per hour,
studies per hour for the batch, and where the time goes: per task, the median time from queued to
running (the executor's hand-off), the median running time, and the summed task time over the wall time.
Uses .cluster/ (the benchmark stops any cluster that runs, and leaves none running). Every invocation starts
from fresh state: a new inbox, and the DAG's ledger and run folders removed; it fails when the batch's own
summary does not show every study done in this run, or when any run failed.

``--no-preload`` runs both sides without ``airflow_local_settings.py`` (``clara_airflow/preload.py``): the
"before" of docs/performance.md. CPU seconds per task are printed per component: on the LocalExecutor the
tasks run under the scheduler, on the Celery cluster under the workers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchlib import WEB_STEPS, task_instances, web_pipeline, web_service  # noqa: E402 - after the path is set

from clara_airflow.batch.inbox import SUMMARY_FILE  # noqa: E402
from tests.distributed.client import CLUSTER, Api, when  # noqa: E402

DAG_ID = "bench-cluster"
POSTGRES_UID = next((int(line.split(":")[2]) for line in Path("/etc/passwd").read_text().splitlines()
                     if line.startswith("postgres:")), -1)
DAGS = CLUSTER / "bench-dags"
PAYLOAD = CLUSTER / "payload" / "bench-study"
INBOX = CLUSTER / "payload" / "bench-inbox"
SERVICE = web_service("bench-cluster")
STEPS = WEB_STEPS


def pipeline() -> str:
    return web_pipeline(DAG_ID, INBOX, SERVICE)


def prepare(studies: int) -> None:
    shutil.rmtree(DAGS, ignore_errors=True)
    shutil.rmtree(CLUSTER / "output" / DAG_ID, ignore_errors=True)  # the ledger and run folders of earlier runs
    (DAGS / "pipelines").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", DAGS / "clara_pipelines.py")
    (DAGS / "pipelines" / f"{DAG_ID}.yaml").write_text(pipeline())
    PAYLOAD.mkdir(parents=True, exist_ok=True)
    (PAYLOAD / "study.txt").write_text("study\n")
    shutil.rmtree(INBOX, ignore_errors=True)
    for n in range(studies):
        folder = INBOX / f"s{n:04d}"
        folder.mkdir(parents=True)
        (folder / "study.txt").write_text(f"study {n}\n")
        (folder / ".complete").write_text("")
    INBOX.chmod(0o755)


def cluster(action: str, executor: str = "CeleryExecutor", preload: bool = True) -> None:
    env = {**os.environ, "CLARA_CLUSTER_EXECUTOR": executor, "CLARA_CLUSTER_DAGS": str(DAGS),
           "CLARA_CLUSTER_PRELOAD": "1" if preload else "0"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), action], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"cluster.sh {action} ({executor}) failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def trigger(api: Api, run_ids: list[str], conf: dict[str, Any]) -> None:
    for run_id in run_ids:
        api.call(f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})


def finish(api: Api, run_ids: list[str], began: float) -> dict[str, Any]:
    runs = api.wait_runs(DAG_ID, run_ids, seconds=1800)
    wall = time.time() - began
    failed = sorted(r for r, data in runs.items() if data["state"] != "success")
    handoff, running, total = [], [], 0.0
    for run_id in run_ids:
        for ti in task_instances(api.call, DAG_ID, run_id):
            queued, start, end = when(ti.get("queued_when")), when(ti["start_date"]), when(ti["end_date"])
            if math.isfinite(queued) and math.isfinite(start):  # when() is inf for a time not set
                handoff.append(start - queued)
            if math.isfinite(start) and math.isfinite(end):
                running.append(end - start)
                total += end - start
    return {"wall": wall, "failed": failed, "tasks": len(running), "handoff": statistics.median(handoff),
            "running": statistics.median(running), "busy": total / wall}


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each cluster component: every process of its session (``setsid`` in
    cluster.sh), each with its reaped children (task supervisors and task processes). PostgreSQL is
    everything the ``postgres`` user runs; containers are not counted (they are the same on both sides)."""
    leaders = {int(f.read_text()): f.stem for f in (CLUSTER / "pids").glob("*.pid") if f.read_text().strip()}
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            owner = stat.parent.stat().st_uid
        except (OSError, IndexError):
            continue
        session, ticks = int(fields[3]), sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        name = leaders.get(session) or ("postgres" if owner == POSTGRES_UID else None)
        name = "worker" if name and name.startswith("worker-") else name
        if name:
            used[name] = used.get(name, 0.0) + ticks / TICKS
    return used


def side(api: Api, executor: str, runs: int) -> dict[str, Any]:
    api.wait_dag(DAG_ID)
    stamp = int(time.time())
    warm = [f"warm-{executor}-{stamp}"]
    trigger(api, warm, {"clara_payload": str(PAYLOAD)})
    finish(api, warm, time.time())
    run_ids = [f"bench-{executor}-{stamp}-{n:02d}" for n in range(runs)]
    before = cpu_seconds()
    began = time.time()
    trigger(api, run_ids, {"clara_payload": str(PAYLOAD)})
    result = finish(api, run_ids, began)
    after = cpu_seconds()
    result["cpu"] = {name: round(after[name] - before.get(name, 0.0), 1) for name in sorted(after)}
    return result


def batch_done(run_id: str, studies: int) -> str | None:
    """Why the batch run did not do the work counted (None when its summary shows every study done)."""
    summary = CLUSTER / "output" / DAG_ID / run_id / SUMMARY_FILE
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError) as exc:
        return f"no batch summary at {summary} ({exc})"
    if data.get("succeeded") != studies:
        return f"the batch did {data.get('succeeded')} of {studies} studies in this run: {summary}"
    return None


def service_instances() -> int:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.load import load_pipeline

    sid = compile_pipeline(load_pipeline(DAGS / "pipelines" / f"{DAG_ID}.yaml")).services[0].id
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=clara-airflow/service-id={sid}"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--no-preload", action="store_true", help="without clara_airflow.preload (the before)")
    args = parser.parse_args()
    prepare(args.studies)
    results: dict[str, dict[str, Any]] = {}
    try:
        for executor in ("LocalExecutor", "CeleryExecutor"):
            cluster("down")
            print(f"[bench] {executor}: cluster.sh up, then {args.runs} runs of {DAG_ID} triggered together", flush=True)
            cluster("up", executor, preload=not args.no_preload)
            api = Api.from_cluster()
            results[executor] = side(api, executor, args.runs)
            print(f"[bench] {executor}: {results[executor]['wall']:.1f} s", flush=True)
        print(f"[bench] CeleryExecutor: one batch run over {args.studies} studies", flush=True)
        began = time.time()
        batch = [f"batch-{int(began)}"]
        trigger(api, batch, {})
        results["batch"] = finish(api, batch, began)
        results["batch"]["not_done"] = batch_done(batch[0], args.studies)
        instances = service_instances()
    finally:
        cluster("down")
    local, celery, batch_run = results["LocalExecutor"], results["CeleryExecutor"], results["batch"]
    print(f"\n{args.runs} runs of a 3-step pipeline sharing one service, triggered together (16 task slots each):")
    print(f"{'':16}{'wall':>9}{'runs/hour':>11}{'failed':>8}{'queued->running':>17}{'task running':>14}"
          f"{'task time/wall':>16}")
    for name, row in (("LocalExecutor", local), ("CeleryExecutor", celery)):
        print(f"{name:16}{row['wall']:8.1f}s{3600 * args.runs / row['wall']:11.0f}{len(row['failed']):8d}"
              f"{row['handoff']:16.2f}s{row['running']:13.2f}s{row['busy']:16.2f}")
    print(f"ratio CeleryExecutor / LocalExecutor: {celery['wall'] / local['wall']:.2f}x (target <= 1.3x)")
    names = sorted(set(local["cpu"]) | set(celery["cpu"]))
    print("CPU seconds by component during the timed runs (2 cores: wall x 2 is the machine's whole budget):")
    for name, row in (("LocalExecutor", local), ("CeleryExecutor", celery)):
        parts = "  ".join(f"{n} {row['cpu'].get(n, 0.0):.1f}" for n in names)
        print(f"  {name:16}{parts}  (total {sum(row['cpu'].values()):.1f} of {2 * row['wall']:.0f})")
    task_side = {"LocalExecutor": local["cpu"].get("scheduler", 0.0) / local["tasks"],
                 "CeleryExecutor": celery["cpu"].get("worker", 0.0) / celery["tasks"]}
    print("CPU seconds per task (the tasks' own processes: the scheduler's session on the LocalExecutor, the "
          f"workers' on Celery; preload {'off' if args.no_preload else 'on'}):")
    for name, row in (("LocalExecutor", local), ("CeleryExecutor", celery)):
        parts = "  ".join(f"{n} {row['cpu'].get(n, 0.0) / row['tasks']:.2f}" for n in names)
        print(f"  {name:16}{parts}")
    print(f"task-side CPU per task: Celery workers {task_side['CeleryExecutor']:.2f} s vs LocalExecutor "
          f"{task_side['LocalExecutor']:.2f} s: {task_side['CeleryExecutor'] / task_side['LocalExecutor']:.2f}x "
          "(target <= 1.2x)")
    print(f"batch of {args.studies} studies on the Celery cluster: {batch_run['wall']:.1f} s, "
          f"{3600 * args.studies / batch_run['wall']:.0f} studies/hour, {len(batch_run['failed'])} failed runs, "
          f"{batch_run['tasks']} tasks; bench service instances running at the end: {instances}")
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "bench_cluster.json").write_text(json.dumps(results, indent=2))
    if batch_run["not_done"]:
        print(f"FAILED: {batch_run['not_done']}", file=sys.stderr)
    return 1 if local["failed"] or celery["failed"] or batch_run["failed"] or batch_run["not_done"] else 0


if __name__ == "__main__":
    sys.exit(main())
