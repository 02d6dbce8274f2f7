"""Per-step overhead under `airflow standalone` (scheduler + LocalExecutor + API server), side by side.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_standalone.py [--repeat 3]

Two DAGs chain four steps that each sleep 1 s in the local busybox image: one compiled from a Clara
YAML, one hand-written with DockerOperator. Runs are triggered through the REST API, alternating,
one at a time. From the task instances it prints, per DAG, the median run wall time, the overhead per
step beyond its 1 s of work, and the median gap between one step's end and the next one's start.
Anchor (AIRFLOW-NOTES): the hand-written DAG under standalone, 8.0-8.8 s, 0.61 s between tasks;
target: <= 1 s overhead per step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.browser.standalone import Standalone, start  # noqa: E402 - after the path is set

sys.path.insert(0, str(REPO / "scripts"))
from benchlib import STEPS, chain_dag_file, chain_pipeline  # noqa: E402 - after the path is set

PIPELINE = chain_pipeline("bench-standalone-compiled")
HAND = chain_dag_file("bench-standalone-hand", "clara-airflow")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_once(server: Standalone, dag_id: str) -> tuple[float, list[float]]:
    run = server.api(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 300
    while server.api(path)["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{dag_id}: run {run['dag_run_id']} did not finish in 300 s")
        time.sleep(0.5)
    state = server.api(path)["state"]
    if state != "success":
        raise SystemExit(f"{dag_id}: run ended {state}; see {server.home / 'logs'}")
    tis = [ti for ti in server.api(f"{path}/taskInstances")["task_instances"] if ti["task_id"].startswith("step")]
    tis.sort(key=lambda ti: ti["start_date"])
    wall = (when(tis[-1]["end_date"]) - when(server.api(path)["start_date"])).total_seconds()
    gaps = [(when(b["start_date"]) - when(a["end_date"])).total_seconds() for a, b in zip(tis, tis[1:], strict=False)]
    return wall, gaps


def wait_for_dags(server: Standalone, dag_ids: list[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    for dag_id in dag_ids:
        while True:
            try:
                server.api(f"/api/v2/dags/{dag_id}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{dag_id} never appeared; see {server.home / 'standalone.log'}") from None
                time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="clara-bench-standalone-"))
    sources = home / "sources"
    sources.mkdir()
    (sources / "bench-standalone-compiled.yaml").write_text(PIPELINE)
    (sources / "bench_standalone_hand.py").write_text(HAND)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    server = start(home, sorted(sources.iterdir()), env)
    try:
        dags = {"hand-written": "bench-standalone-hand", "compiled": "bench-standalone-compiled"}
        wait_for_dags(server, list(dags.values()))
        walls: dict[str, list[float]] = {name: [] for name in dags}
        gaps: dict[str, list[float]] = {name: [] for name in dags}
        for round_ in range(args.repeat + 1):
            for name, dag_id in dags.items():
                wall, between = run_once(server, dag_id)
                if round_:  # the first round warms the worker's imports
                    walls[name].append(wall)
                    gaps[name] += between
        print(f"{STEPS} x 1 s steps under airflow standalone (LocalExecutor), median of {args.repeat} runs each")
        result: dict[str, Any] = {}
        for name in dags:
            wall = statistics.median(walls[name])
            result[name] = wall
            print(f"{name:<13} run {wall:6.2f} s   overhead per step {(wall - STEPS) / STEPS:5.2f} s   "
                  f"gap between steps {statistics.median(gaps[name]):5.2f} s")
        print(f"ratio compiled / hand-written: {result['compiled'] / result['hand-written']:.3f}x "
              "(target: <= 1 s overhead per step)")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
