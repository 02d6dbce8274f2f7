"""Dags-folder parse benchmark: N pipeline files behind one loader, parsed the way Airflow does.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_parse.py [--sizes 10 100 1000] [--repeat 5]

For each N, a folder holds ``clara_pipelines.py`` and N pipelines (the shared examples and the demo
pipeline, cycled, each renamed to a unique DAG id). Every measurement is a fresh Python process, as
Airflow's DAG processor uses one per file parse, that builds a ``DagBag`` of the loader file:

- ``processor``: the whole folder (what the DAG processor does every ``min_file_process_interval``);
  ``[core] dagbag_import_timeout`` (30 s by default) bounds it;
- ``worker``: the same file with the parsing context of one DAG, as a task's worker parses it; only
  that pipeline is compiled;
- ``preloaded``: the worker's parse in a process where ``clara_airflow.preload`` ran first, as in a
  task forked from a scheduler or Celery worker that preloads (docs/performance.md); the preload's own
  time is left out, as the parent pays it once.

Printed: mean +/- sd of the parse time (after Airflow is imported) and per pipeline. The Airflow
import itself (about 1.6 s per process on this kind of machine) is shown apart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, os, sys, time
t0 = time.perf_counter()
from clara_airflow.airflow_compat import dagbag
try:  # Airflow itself, counted apart: clara_airflow.airflow_compat imports it only when called
    import airflow.dag_processing.dagbag
except ImportError:  # Airflow 3.1
    import airflow.models.dagbag
t1 = time.perf_counter()
if os.environ.get("CLARA_BENCH_PRELOAD"):
    from clara_airflow.preload import preload
    preload()
t2 = time.perf_counter()
bag = dagbag(dag_folder=sys.argv[1])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "preload": t2 - t1, "parse": t3 - t2, "dags": len(bag.dags),
                  "errors": len(bag.import_errors)}))
"""


def sources() -> list[Path]:
    shared = REPO.parent / "shared" / "pipelines"
    folder = shared if shared.is_dir() else REPO / "tests" / "fixtures" / "shared-pipelines"
    return [*sorted(folder.glob("*.yaml")), REPO / "dags" / "pipelines" / "ct-organ-triage.yaml"]


def make_folder(root: Path, n: int) -> tuple[Path, str]:
    folder = root / f"dags-{n}"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", folder / "clara_pipelines.py")
    files = sources()
    last = ""
    for i in range(n):
        text = files[i % len(files)].read_text()
        text, count = re.subn(r"^name:\s*['\"]?([A-Za-z0-9_-]+)['\"]?", lambda m, i=i: f"name: {m.group(1)}-{i:04d}",
                              text, count=1, flags=re.MULTILINE)
        assert count == 1, files[i % len(files)]
        last = re.search(r"^name: (\S+)", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
        (folder / f"p{i:04d}.yaml").write_text(text)
    return folder, last


def probe(loader: Path, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(loader)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"parsing {loader} failed:\n{done.stderr[-3000:]}")
    out = done.stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def describe(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * 1000:9.1f} +/- {sd * 1000:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="clara-bench-parse-"))
    base = {**os.environ, "AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    print(f"{'N':>5} {'kind':<10} {'parse (mean +/- sd)':>26} {'per pipeline':>14} {'DAGs':>6}   airflow import; "
          "preload (paid once by the parent)")
    means: dict[tuple[int, str], float] = {}
    try:
        for n in args.sizes:
            folder, one = make_folder(root, n)
            loader = folder / "clara_pipelines.py"
            worker = {**base, "_AIRFLOW_PARSING_CONTEXT_DAG_ID": one}
            for kind, env in (("processor", base), ("worker", worker),
                              ("preloaded", {**worker, "CLARA_BENCH_PRELOAD": "1"})):
                runs = [probe(loader, env) for _ in range(args.repeat)]
                if any(r["errors"] for r in runs):
                    raise SystemExit(f"N={n} {kind}: import errors (dagbag_import_timeout?)")
                parse = [r["parse"] for r in runs]
                per = f"{statistics.mean(parse) / n * 1000:11.2f} ms" if kind == "processor" else f"{'-':>14}"
                print(f"{n:>5} {kind:<10} {describe(parse):>26} {per} {int(runs[0]['dags']):>6}   "
                      f"{describe([r['import'] for r in runs]).strip()}"
                      + (f"; {describe([r['preload'] for r in runs]).strip()}" if kind == "preloaded" else ""))
                means[(n, kind)] = statistics.mean(parse)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = min(args.sizes), max(args.sizes)
    if large > small:
        marginal = (means[(large, "processor")] - means[(small, "processor")]) / (large - small) * 1000
        print(f"\nmarginal cost per added pipeline (N={small} -> {large}): {marginal:.2f} ms; "
              f"the worker's parse stays flat because only its own DAG is compiled")


if __name__ == "__main__":
    main()
