"""Parse/compile and DAG-build benchmark: medians measured side by side in one run, printed as ratios.

    .venv/bin/python scripts/bench.py [--repeat 200]

Anchors (AIRFLOW-NOTES): reading the same YAML with libyaml's CSafeLoader (target: loader <= 1.2x),
and a hand-written DockerOperator DAG of the same shape (stretch target: match it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="clara-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(REPO))


def median_ms(func: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        func()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def hand_written(plan: object) -> object:
    """The same DAG written directly with DockerOperator, as a user would without clara-airflow."""
    from datetime import datetime

    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import DAG

    with DAG(dag_id=plan.dag_id + "-hand", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        tasks = {s.name: DockerOperator(task_id=s.name, image=f"{s.image}:{s.tag}", command=list(s.command) or None,
                                        environment=dict(s.variables), network_mode="clara-airflow",
                                        mount_tmp_dir=False, mem_limit=f"{s.requests.memory}m")
                 for s in plan.steps}
        for s in plan.steps:
            for up in s.upstream:
                tasks[up] >> tasks[s.name]
    return dag


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    import yaml

    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.dag import build_dag
    from clara_airflow.spec.defaults import CONFIG_ONLY
    from clara_airflow.spec.load import load_pipeline

    shared = REPO.parent / "shared" / "pipelines"
    files = sorted((shared if shared.is_dir() else REPO / "tests/fixtures/shared-pipelines").glob("*.yaml"))
    files.append(REPO / "dags/pipelines/ct-organ-triage.yaml")
    print(f"{'pipeline':<36} {'libyaml':>8} {'load+compile':>13} {'ratio':>6} {'hand DAG':>9} {'build_dag':>10} {'ratio':>6}")
    ratios_load, ratios_dag = [], []
    for path in files:
        data = path.read_bytes()
        anchor = median_ms(lambda d=data: yaml.load(d, Loader=yaml.CSafeLoader), args.repeat)
        ours = median_ms(lambda p=path, d=data: compile_pipeline(load_pipeline(p, d)), args.repeat)
        plan = compile_pipeline(load_pipeline(path, data))
        hand = median_ms(lambda p=plan: hand_written(p), max(args.repeat // 4, 10))
        built = median_ms(lambda p=plan: build_dag(p, dict(CONFIG_ONLY)), max(args.repeat // 4, 10))
        ratios_load.append(ours / anchor)
        ratios_dag.append(built / hand)
        print(f"{path.name:<36} {anchor:>7.3f}ms {ours:>11.3f}ms {ours / anchor:>5.2f}x {hand:>7.3f}ms "
              f"{built:>8.3f}ms {built / hand:>5.2f}x")
    print(f"\nmedian ratio load+compile / libyaml read: {statistics.median(ratios_load):.2f}x (target <= 1.2x)")
    print(f"median ratio build_dag (incl. ensure tasks) / hand-written DockerOperator DAG: "
          f"{statistics.median(ratios_dag):.2f}x")


if __name__ == "__main__":
    main()
