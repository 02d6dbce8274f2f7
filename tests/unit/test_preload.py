"""clara_airflow.preload: a forked task process finds what its DAG file's parse needs already imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PARSE = """
import json, os, sys
os.environ["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = sys.argv[2]  # as a task's worker parses its DAG file
from clara_airflow.airflow_compat import dagbag  # Airflow's own parse machinery, as a task runner has it
if sys.argv[3] == "preload":
    from clara_airflow.preload import preload
    preload()
before = set(sys.modules)
bag = dagbag(dag_folder=sys.argv[1])
new = sorted(m for m in set(sys.modules) - before
             if m.split(".")[0] in ("clara_airflow", "docker", "requests", "yaml", "pydantic")
             or m.startswith(("airflow.providers.docker", "airflow.sdk.definitions.decorators")))
print(json.dumps({"dags": sorted(bag.dags), "errors": {str(k): v for k, v in bag.import_errors.items()}, "new": new}))
"""


def parse(folder: Path, dag_id: str, mode: str, tmp_path: Path) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PARSE, str(folder / "clara_pipelines.py"), dag_id, mode],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_after_preload_a_task_s_parse_imports_none_of_clara_airflow_nor_the_docker_sdk(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "clara_pipelines.py", folder)
    demo = (REPO / "dags" / "pipelines" / "ct-organ-triage.yaml").read_text()
    (folder / "demo.yaml").write_text(demo)  # a shared service
    (tmp_path / "inbox").mkdir()
    batch = demo.replace("name: ct-organ-triage", "name: demo-batch", 1)
    (folder / "batch.yaml").write_text(batch.replace("\nx-airflow:\n", f"\nx-airflow:\n  batch: {{inbox: {tmp_path}/inbox}}\n"))
    for dag_id in ("ct-organ-triage", "demo-batch"):
        cold = parse(folder, dag_id, "cold", tmp_path)
        assert cold["dags"] == [dag_id] and not cold["errors"], cold
        assert "clara_airflow.operators.docker_step" in cold["new"] and "docker" in cold["new"], (dag_id, cold)
        warm = parse(folder, dag_id, "preload", tmp_path)
        assert warm["dags"] == [dag_id] and not warm["errors"], warm
        assert warm["new"] == [], f"imported by the parse although preload should have: {warm['new']}"


FORK = """
import os, sys
from clara_airflow import preload
preload.MODULES = {**preload.MODULES, "json": ("clara_airflow.no_such_module",)}  # a failing one is skipped
preload.install()
assert "clara_airflow.operators.docker_step" not in sys.modules  # nothing until the first fork
pid = os.fork()
if pid == 0:
    os._exit(0 if "clara_airflow.operators.docker_step" in sys.modules and "docker" in sys.modules else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the forked child had to import clara_airflow itself"
pid = os.fork()  # a second fork does not import again
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(sorted(m for m in sys.modules if m.startswith("clara_airflow.operators")))
"""


def test_install_imports_in_the_parent_at_its_first_fork_and_skips_what_fails(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "clara_airflow.operators.docker_step" in done.stdout
    # imports made from a register_at_fork(before=...) hook broke the fork's own lock handling (logging's)
    assert "Exception ignored" not in done.stderr, done.stderr[-2000:]
