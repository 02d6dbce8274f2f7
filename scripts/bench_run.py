"""Run-time benchmark: a compiled Clara DAG against the same DAG hand-written with DockerOperator.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_run.py [--repeat 3]

Both DAGs chain four steps that each sleep 1 s in the local busybox image, run with ``dag.test()``
in one process against a throw-away SQLite metadata database, alternating, after one warm-up run
of each (the first call in a process pays imports). Anchor (AIRFLOW-NOTES): the hand-written DAG;
target: the compiled DAG <= 1.05x its wall time. The compiled DAG does what the hand-written one
does not: per-run output folders, read-only input mounts, the payload check.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="clara-bench-run-"))
os.environ.update({
    "AIRFLOW_HOME": str(WORK / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(WORK / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CLARA__OUTPUT_ROOT": str(WORK / "output"),
    "AIRFLOW__CLARA__PAYLOAD_ROOT": str(WORK / "payload"),
    "AIRFLOW__CLARA__NETWORK": "clara-airflow-bench",
})
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from benchlib import STEPS, chain_dag_file, chain_pipeline  # noqa: E402 - after the path is set

PIPELINE = chain_pipeline("bench-run-compiled")
HAND = chain_dag_file("bench-run-hand", "clara-airflow-bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dags = WORK / "dags"
    dags.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", dags / "clara_pipelines.py")
    (dags / "bench-run-compiled.yaml").write_text(PIPELINE)
    (dags / "bench_run_hand.py").write_text(HAND)
    payload = WORK / "payload"
    payload.mkdir()
    (payload / "study.txt").write_text("x")

    from airflow.utils import db

    from clara_airflow.airflow_compat import dagbag

    logging.disable(logging.WARNING)
    db.resetdb()
    bag = dagbag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    runs = {"hand": lambda: bag.dags["bench-run-hand"].test(),
            "compiled": lambda: bag.dags["bench-run-compiled"].test(run_conf={"clara_payload": str(payload)})}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeat + 1):
        for name, run in runs.items():
            began = time.perf_counter()
            dr = run()
            seconds = time.perf_counter() - began
            if str(dr.state) != "success":
                raise SystemExit(f"{name} run ended {dr.state}")
            if round_:
                samples[name].append(seconds)
    hand, ours = statistics.median(samples["hand"]), statistics.median(samples["compiled"])
    print(f"{STEPS} x 1 s steps, dag.test(), median of {args.repeat} after a warm-up run each")
    print(f"hand-written DockerOperator DAG: {hand:6.2f} s")
    print(f"compiled Clara DAG:              {ours:6.2f} s   ratio {ours / hand:.3f}x (target <= 1.05x)")
    print(f"overhead per step beyond its 1 s of work: hand-written {(hand - STEPS) / STEPS:.2f} s, "
          f"compiled {(ours - STEPS) / STEPS:.2f} s (container create, start, logs, removal; task bookkeeping)")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
