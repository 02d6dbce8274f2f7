"""Parse/compile and DAG-build benchmark: medians measured side by side in one run, printed as ratios.

    .venv/bin/python scripts/bench.py [--repeat 200]

Every column is measured interleaved (one call of each per round), so drift hits all alike.

- ``libyaml``: reading the file with libyaml's CSafeLoader, nothing else.
- ``load+compile``: our spec load (positions, V1–V34) and compile to a frozen plan.
- ``hand DAG``: the same DAG written directly in Python with DockerOperator (a ``clara_payload``
  Param plus one Param per pipeline parameter, as a usable hand-written Clara DAG needs).
- ``build_dag``: our DAG from the plan, including the ensure tasks and the lease-release teardown.
- ``yaml->hand``: the AIRFLOW-NOTES anchor "the same read from YAML with libyaml": CSafeLoader plus
  a naive factory building that hand-written DAG from the dict, with no validation at all.
- ``yaml->ours``: the whole path of a dags-folder parse, file bytes to DAG.

- ``dag-factory`` (with ``--dag-factory``): dag-factory 1.1.0, installed from PyPI into ``.bench/``
  on first use, on a dag-factory YAML that builds the hand-written DAG (telemetry off).

Targets (AIRFLOW-NOTES): yaml->ours <= 1.2x yaml->hand; dag-factory >= 4x slower than yaml->ours;
stretch: build_dag matches the hand DAG.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="clara-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.update({"AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False", "DO_NOT_TRACK": "1"})
DAG_FACTORY = REPO / ".bench" / "dag-factory-1.1.0"
sys.path.insert(0, str(REPO))
START = datetime(2024, 1, 1, tzinfo=UTC)


def hand_dag(dag_id: str, ops: list[dict[str, Any]], parameters: dict[str, str]) -> Any:
    """A hand-written DockerOperator DAG; ``ops`` items: name, image, command, env, upstream, memory."""
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import DAG, Param

    params = {"clara_payload": Param("/data/in", type="string"),
              **{name: Param(default, type="string") for name, default in parameters.items()}}
    with DAG(dag_id=dag_id, schedule=None, start_date=START, params=params) as dag:
        tasks = {op["name"]: DockerOperator(task_id=op["name"], image=op["image"], command=op["command"] or None,
                                            environment=op["env"], network_mode="clara-airflow",
                                            mount_tmp_dir=False, mem_limit=f"{op['memory']}m")
                 for op in ops}
        for op in ops:
            for up in op["upstream"]:
                tasks[up] >> tasks[op["name"]]
    return dag


def hand_from_plan(plan: Any) -> Any:
    ops = [{"name": s.name, "image": f"{s.image}:{s.tag}", "command": list(s.command), "env": dict(s.variables),
            "upstream": list(s.upstream), "memory": s.requests.memory} for s in plan.steps]
    return hand_dag(plan.dag_id + "-hand", ops, dict(plan.parameters))


def hand_from_yaml(data: bytes) -> Any:
    """What a user's own ten-line factory does: read with libyaml, trust the dict, build the DAG."""
    import yaml

    doc = yaml.load(data, Loader=yaml.CSafeLoader)
    ops = []
    for op in doc.get("operators") or []:
        container = op.get("container") or {}
        upstream = [i["from"] for i in op.get("input") or [] if isinstance(i, dict) and i.get("from")]
        ops.append({"name": op["name"], "image": f"{container.get('image')}:{container.get('tag', 'latest')}",
                    "command": [str(c) for c in container.get("command") or []],
                    "env": {str(k): str(v) for k, v in (op.get("variables") or {}).items()},
                    "upstream": [u for u in upstream if isinstance(u, str)],
                    "memory": (op.get("requests") or {}).get("memory", 512)})
    parameters = {str(k): str(v) for k, v in (doc.get("parameters") or {}).items()}
    return hand_dag(str(doc.get("name")) + "-yaml", ops, parameters)


def ten_operators() -> Path:
    """The anchor's shape: 10 operators (a chain with a fan-out), two of them sharing one service."""
    lines = ["api-version: 0.4.0", "name: bench-ten-operators", "operators:"]
    for n in range(10):
        lines += [f"- name: op{n}", "  container:", "    image: clara-airflow/busybox", '    tag: "1"',
                  f'    command: ["/bin/sh", "-c", "cp -r /in/. /out/ && echo {n}"]',
                  "  variables:", f'    STEP: "{n}"', "  input:", "  - path: /in"]
        if n:
            lines.append(f"    from: op{(n - 1) // 2}")
        lines += ["  output:", "  - path: /out"]
        if n in (3, 7):
            lines += ["  services:", "  - name: infer", "    container:", "      image: clara-airflow/kserve-stub",
                      '      tag: "0.1"', "    connections:", "      http:", "      - name: INFER_URI",
                      "        port: 8000"]
    path = Path(tempfile.mkdtemp(prefix="clara-bench-")) / "10-operators-generated.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def dag_factory_loader() -> Callable[[Path], object]:
    """dag-factory's ``load_yaml_dags`` for one config file, installed on first use."""
    if not (DAG_FACTORY / "dagfactory").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(DAG_FACTORY),
                        "dag-factory==1.1.0"], check=True)
    sys.path.insert(0, str(DAG_FACTORY))
    from dagfactory import load_yaml_dags

    return lambda path: load_yaml_dags(globals_dict={}, config_filepath=str(path),
                                       defaults_config_path=str(path.parent))


def dag_factory_config(plan: Any) -> Path:
    """The hand-written DAG as dag-factory YAML (written once, outside the measurement)."""
    import yaml

    config = {plan.dag_id + "-df": {
        "default_args": {"start_date": "2024-01-01"}, "schedule": None,
        "params": {"clara_payload": "/data/in", **dict(plan.parameters)},
        "tasks": [{"task_id": s.name, "operator": "airflow.providers.docker.operators.docker.DockerOperator",
                   "image": f"{s.image}:{s.tag}", "command": list(s.command), "environment": dict(s.variables),
                   "network_mode": "clara-airflow", "mount_tmp_dir": False, "mem_limit": f"{s.requests.memory}m",
                   **({"dependencies": list(s.upstream)} if s.upstream else {})} for s in plan.steps]}}
    path = Path(tempfile.mkdtemp(prefix="clara-bench-df-")) / f"{plan.dag_id}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def medians(funcs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, func in funcs.items():
            began = time.perf_counter()
            func()
            samples[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--dag-factory", action="store_true", help="also time dag-factory 1.1.0 (pip-installed)")
    args = parser.parse_args()
    import yaml

    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.dag import build_dag
    from clara_airflow.spec.load import load_pipeline

    logging.getLogger("clara_airflow").setLevel(logging.ERROR)  # the examples' lint warnings, once per call
    shared = REPO.parent / "shared" / "pipelines"
    files = sorted((shared if shared.is_dir() else REPO / "tests/fixtures/shared-pipelines").glob("*.yaml"))
    files += [REPO / "dags/pipelines/ct-organ-triage.yaml", ten_operators()]
    columns = ["libyaml", "load+compile", "hand DAG", "build_dag", "yaml->hand", "yaml->ours"]
    df_load = dag_factory_loader() if args.dag_factory else None
    if df_load:
        columns.append("dag-factory")
    print(f"{'pipeline (ms, median)':<34}" + "".join(f"{c:>13}" for c in columns) + f"{'e2e ratio':>11}")
    ratios: dict[str, list[float]] = {"e2e": [], "load": [], "dag": [], "df": []}
    for path in files:
        data = path.read_bytes()
        plan = compile_pipeline(load_pipeline(path, data))
        for _ in range(5):  # warm caches and imports outside the measurement
            build_dag(plan)
            hand_from_yaml(data)
        funcs: dict[str, Callable[[], object]] = {
            "libyaml": lambda d=data: yaml.load(d, Loader=yaml.CSafeLoader),
            "load+compile": lambda p=path, d=data: compile_pipeline(load_pipeline(p, d)),
            "hand DAG": lambda p=plan: hand_from_plan(p),
            "build_dag": lambda p=plan: build_dag(p),
            "yaml->hand": lambda d=data: hand_from_yaml(d),
            "yaml->ours": lambda p=path, d=data: build_dag(compile_pipeline(load_pipeline(p, d))),
        }
        if df_load:
            config = dag_factory_config(plan)
            df_load(config)
            funcs["dag-factory"] = lambda c=config: df_load(c)
        m = medians(funcs, args.repeat)
        if df_load:
            ratios["df"].append(m["dag-factory"] / m["yaml->ours"])
        ratios["e2e"].append(m["yaml->ours"] / m["yaml->hand"])
        ratios["load"].append(m["load+compile"] / m["libyaml"])
        ratios["dag"].append(m["build_dag"] / m["hand DAG"])
        print(f"{path.name:<34}" + "".join(f"{m[c]:>13.3f}" for c in columns) + f"{ratios['e2e'][-1]:>10.2f}x")
    print(f"\nmedian ratio yaml->ours / yaml->hand (file to DAG):         {statistics.median(ratios['e2e']):.2f}x"
          "  (target <= 1.2x)")
    print(f"median ratio load+compile / libyaml read alone:             {statistics.median(ratios['load']):.2f}x")
    print(f"median ratio build_dag / hand-written DAG (incl. services): {statistics.median(ratios['dag']):.2f}x"
          "  (stretch: 1.0x)")
    if ratios["df"]:
        print(f"median ratio dag-factory / yaml->ours:                      {statistics.median(ratios['df']):.2f}x"
              "  (target >= 4x)")


if __name__ == "__main__":
    main()
