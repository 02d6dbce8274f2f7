"""Exactly once under a real scheduler (``airflow standalone``, LocalExecutor, Docker): what dag.test()
cannot show, because there one run is all there is and a task's run state comes from the same process.

- Two batch runs overlap (``max_active_runs: 2``): the second, started while the first run's steps
  still run, takes only the studies the first did not claim; each study is processed once.
- A run whose worker was killed (kill -9) and which was then marked failed, as an operator does in the
  UI, never runs its teardown: the reaper (every minute here) releases its lease on the shared service
  and removes the step container the dead worker left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.standalone import Standalone, start
from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]
FIXTURES = REPO / "tests" / "fixtures" / "scheduler"


def wait(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = check()
        except urllib.error.HTTPError as error:  # a busy server's 5xx is "not yet", anything else fails
            if error.code < 500:
                raise
            found = None
        if found:
            return found
        time.sleep(1)
    raise AssertionError(what)


@pytest.fixture(scope="module")
def airflow() -> Iterator[Standalone]:
    home = Path(tempfile.mkdtemp(prefix="clara-scheduler-"))
    home.chmod(0o755)  # step containers (not root) read the studies
    inbox = home / "airflow" / "payload" / "inbox"  # below payload_root, as a real inbox would be
    sources = home / "pipelines"
    sources.mkdir()
    for fixture in FIXTURES.glob("*.yaml"):
        (sources / fixture.name).write_text(fixture.read_text().replace("@INBOX@", str(inbox)))
    airflow = start(home / "airflow", sorted(sources.glob("*.yaml")), dict(os.environ),
                    overrides={"AIRFLOW__CLARA__REAPER_SCHEDULE": "* * * * *", "AIRFLOW__CLARA__STEP_GRACE": "0"})
    inbox.mkdir(parents=True)
    try:
        for dag_id in ("it-overlap", "it-abandon", "clara_service_reaper"):
            wait(lambda d=dag_id: _parsed(airflow, d), 90, f"{dag_id} was not parsed; see {airflow.home}")
        yield airflow
    finally:
        airflow.stop()
        artifacts = REPO / "artifacts" / "scheduler"
        artifacts.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(airflow.home / "standalone.log", artifacts / "standalone.log")
        shutil.rmtree(home, ignore_errors=True)


def _parsed(airflow: Standalone, dag_id: str) -> bool:
    try:
        return bool(airflow.api(f"/api/v2/dags/{dag_id}"))
    except urllib.error.HTTPError:
        return False


def trigger(airflow: Standalone, dag_id: str, run_id: str) -> None:
    """Triggers as a client of the REST API should: a 5xx (SQLite busy while the scheduler writes, once seen
    right after start) is retried; a 409 after such a retry means the first try had created the run."""
    for attempt in range(5):
        try:
            airflow.api(f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {}})
            return
        except urllib.error.HTTPError as error:
            body = error.read()[:1000].decode(errors="replace")
            if error.code == 409 and attempt:
                return
            if error.code < 500 or attempt == 4:
                raise AssertionError(f"triggering {dag_id}/{run_id}: HTTP {error.code} {body}") from error
            print(f"triggering {dag_id}/{run_id}: HTTP {error.code} {body}; retrying")
            time.sleep(3)


def run_of(airflow: Standalone, dag_id: str, run_id: str) -> dict[str, Any]:
    return airflow.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")


def tasks_of(airflow: Standalone, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(airflow.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"])


def finished(airflow: Standalone, dag_id: str, run_id: str, seconds: float = 240) -> dict[str, Any]:
    return wait(lambda: (r := run_of(airflow, dag_id, run_id))["state"] in ("success", "failed") and r, seconds,
                f"{dag_id}/{run_id} did not finish; see {airflow.home / 'logs'}")


def add_studies(inbox: Path, names: list[str]) -> None:
    for name in names:
        folder = inbox / name
        folder.mkdir()
        (folder / "study.txt").write_text(f"{name}\n")
        (folder / ".complete").touch()


def test_a_second_run_started_while_the_first_still_works_takes_only_new_studies(airflow: Standalone) -> None:
    inbox = airflow.payload / "inbox"
    add_studies(inbox, ["s1", "s2", "s3"])
    trigger(airflow, "it-overlap", "manual__first")
    wait(lambda: [t for t in tasks_of(airflow, "it-overlap", "manual__first")
                  if t["task_id"] == "study.slow" and t["state"] == "running"], 180,
         "the first run's steps never ran")
    add_studies(inbox, ["s4", "s5"])
    trigger(airflow, "it-overlap", "manual__second")
    second = finished(airflow, "it-overlap", "manual__second")
    first = finished(airflow, "it-overlap", "manual__first")

    assert (first["state"], second["state"]) == ("success", "success")
    (chose,) = [t for t in tasks_of(airflow, "it-overlap", "manual__second") if t["task_id"] == "select_studies"]
    assert chose["end_date"] < first["end_date"], "the second run chose its studies after the first had ended"
    root = airflow.output / "it-overlap"
    taken = {run: {s["study"]: s["state"] for s in json.loads((root / run / "batch-summary.json").read_text())["studies"]}
             for run in ("manual__first", "manual__second")}
    assert taken == {"manual__first": {"s1": "success", "s2": "success", "s3": "success"},
                     "manual__second": {"s4": "success", "s5": "success"}}
    for run, studies in taken.items():  # each study's result exists once, in the run that took it
        for study in studies:
            assert (root / run / study / "slow" / "result.txt").read_text() == f"{study}\n"
    assert sorted(p.parent.parent.name for p in root.glob("*/*/slow/result.txt")) == ["s1", "s2", "s3", "s4", "s5"]


def _kill_worker_of(ti_id: str) -> list[int]:
    """kill -9 the task process ('airflow worker -- <ti id>') and its parent, the executor's worker that
    supervises it: a worker lost with its host, as far as this run is concerned."""
    killed = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            if f"airflow worker -- {ti_id}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                for victim in (int(pid), parent):
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
    return killed


def test_the_reaper_frees_what_a_killed_run_marked_failed_held(airflow: Standalone, docker_cli: Any) -> None:
    from clara_airflow.backends.docker import LABEL_RUN_ID

    run_id = "manual__abandoned"
    trigger(airflow, "it-abandon", run_id)
    step = wait(lambda: next((t for t in tasks_of(airflow, "it-abandon", run_id)
                              if t["task_id"] == "stuck" and t["state"] == "running"), None), 180,
                "the step never ran")
    containers = wait(lambda: docker_cli.containers.list(filters={"label": f"{LABEL_RUN_ID}={run_id}"}), 60,
                      "the step's container never started")

    def leases() -> list[str]:
        found = airflow.api("/api/v2/variables?limit=1000")["variables"]
        return [v["key"] for v in found if v["key"].startswith("clara_lease_") and run_id in (v.get("value") or "")]

    assert leases(), "the run took no lease on its service"
    assert _kill_worker_of(step["id"]), "the task process was not found"
    airflow.api(f"/api/v2/dags/it-abandon/dagRuns/{run_id}", {"state": "failed"}, method="PATCH")
    marked = time.monotonic()
    teardown = next(t for t in tasks_of(airflow, "it-abandon", run_id) if t["task_id"].endswith("release_leases"))
    assert teardown["state"] != "success", "the teardown released the lease: the reaper was not needed"

    wait(lambda: not leases(), 150, "the reaper did not release the failed run's lease within its period")
    wait(lambda: not docker_cli.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={run_id}"}), 60,
         f"the dead worker's step container {containers[0].name} was not removed")
    assert time.monotonic() - marked < 180
    reaped = airflow.api("/api/v2/dags/clara_service_reaper/dagRuns?state=success&limit=5")["dag_runs"]
    assert reaped, "no reaper run succeeded"
