"""Where a task's CPU goes on a real executor: py-spy over the processes that run the tasks.

    bash scripts/setup.sh && .venv/bin/python scripts/profile_tasks.py [--executor CeleryExecutor] [--runs 10]
        [--no-preload]

Brings up ``scripts/cluster.sh`` with the executor (the benchmark's pipeline of scripts/bench_cluster.py:
3 steps and one shared service), runs one untimed warm-up run, then records ``--runs`` runs triggered
together with ``py-spy record --subprocesses`` attached to what runs the tasks: the scheduler (the
LocalExecutor forks its workers from it) or the two Celery workers. Every sample is put in one bucket by
the process it came from and the frames on its stack, and the table gives CPU seconds per task:

- the process that hands tasks out (the scheduler, or a Celery worker's main process);
- the executor's worker process, which runs Airflow's supervisor (heartbeats, the task's log lines);
- the task process: the DAG file's parse (imports, and building the one DAG), Airflow's own imports,
  our operator code, the Docker SDK, the Task SDK's calls to the API server (XCom, Variables, state),
  logging, and the rest of Airflow's task runner.

``--no-preload`` runs without ``clara_airflow.preload`` (the before of docs/performance.md). The cluster
is stopped at the end. py-spy samples at ``--rate`` Hz per thread that is on the CPU, and slows what it
samples: compare tables of one machine, not the seconds with the benchmarks'.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import bench_cluster as bench  # noqa: E402 - after the path is set

from tests.distributed.client import CLUSTER, Api  # noqa: E402

BUCKETS: list[tuple[str, Callable[[str], bool]]] = [  # (name, test on the task process's own frames), first match wins
    ("DAG file parse: imports", lambda s: "clara_pipelines.py" in s and "_find_and_load" in s),
    ("DAG file parse: the DAG built", lambda s: "clara_pipelines.py" in s),
    ("Airflow's imports", lambda s: "_find_and_load" in s),
    ("our operator code", lambda s: "clara_airflow/" in s and "/docker/" not in s),
    ("Docker SDK", lambda s: "/docker/" in s or "/kubernetes/" in s),
    ("Task SDK calls (XCom, Variables, state)", lambda s: "execution_time/comms" in s or "sdk/api/client" in s
     or "xcom" in s.lower() or "variable" in s.lower()),
    ("logging", lambda s: "structlog" in s or "/logging/" in s or "/log.py" in s),
]


def bucket(frames: list[str], depth: int) -> str:
    if depth <= 1:
        return "hand-out (scheduler, or Celery worker main)"
    text = ";".join(frames)
    if depth == 2:
        return "executor worker + supervisor: logging" if "structlog" in text or "/logging/" in text else \
            "executor worker + supervisor"
    return next((f"task process: {name}" for name, test in BUCKETS if test(text)), "task process: Airflow's task runner")


def table(raw_files: list[Path], rate: int) -> dict[str, float]:
    seconds: dict[str, float] = collections.defaultdict(float)
    for raw in raw_files:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            marks = [i for i, f in enumerate(frames) if f.startswith("process ")]
            own = frames[marks[-1] + 1:] if marks else frames
            seconds[bucket(own, len(marks))] += int(count) / rate
    return dict(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", choices=["LocalExecutor", "CeleryExecutor"], default="LocalExecutor")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--no-preload", action="store_true")
    args = parser.parse_args()
    bench.prepare(1)
    out = Path(tempfile.mkdtemp(prefix="clara-profile-"))
    try:
        bench.cluster("down")
        bench.cluster("up", args.executor, preload=not args.no_preload)
        api = Api.from_cluster()
        api.wait_dag(bench.DAG_ID)
        stamp = int(time.time())
        warm = [f"profile-warm-{stamp}"]
        bench.trigger(api, warm, {"clara_payload": str(bench.PAYLOAD)})
        bench.finish(api, warm, time.time())
        names = ["scheduler"] if args.executor == "LocalExecutor" else ["worker-1", "worker-2"]
        pids = [int((CLUSTER / "pids" / f"{name}.pid").read_text()) for name in names]
        spies = [subprocess.Popen([str(REPO / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--subprocesses",
                                   "--nonblocking", "--rate", str(args.rate), "--format", "raw", "-o",
                                   str(out / f"{pid}.raw")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for pid in pids]
        time.sleep(2)
        run_ids = [f"profile-{stamp}-{n:02d}" for n in range(args.runs)]
        began = time.time()
        bench.trigger(api, run_ids, {"clara_payload": str(bench.PAYLOAD)})
        result = bench.finish(api, run_ids, began)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            _, err = spy.communicate(timeout=120)
            if spy.returncode not in (0, -signal.SIGINT):
                raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode()[-1000:]}")
    finally:
        bench.cluster("down")
    if result["failed"]:
        raise SystemExit(f"runs failed: {result['failed']}")
    seconds = table(sorted(out.glob("*.raw")), args.rate)
    tasks, total = result["tasks"], sum(seconds.values())
    print(f"{args.executor}, preload {'off' if args.no_preload else 'on'}: {args.runs} runs, {tasks} tasks, "
          f"{result['wall']:.1f} s wall; CPU seconds per task (py-spy, {args.rate} Hz)")
    for name, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<58}{value / tasks:7.3f} s  {100 * value / total:5.1f} %")
    print(f"  {'total':<58}{total / tasks:7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
