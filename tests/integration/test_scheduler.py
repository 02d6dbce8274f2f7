"""Exactly once under a real scheduler (``airflow standalone``, LocalExecutor, Docker): what dag.test()
cannot show, because there one run is all there is and a task's run state comes from the same process.

- Two batch runs overlap (``max_active_runs: 2``): the second, started while the first run's steps
  still run, takes only the studies the first did not claim; each study is processed once.
- A run whose worker was killed (kill -9) and which was then marked failed, as an operator does in the
  UI: its lease on the shared service goes (its teardown, if Airflow still runs it, or the reaper) and
  the reaper (every minute here) removes the step container the dead worker left behind.
- GPUs of one Docker host (``[clara] gpus = 0,1`` in ``visible_devices`` mode, so no GPU is needed): four
  one-GPU steps run at most two at a time and never share a device; a service holds its device while its
  steps share the other; a killed step's device is free once its container is gone.
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
ARTIFACTS = REPO / "artifacts" / "scheduler"


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
    gpus = {"AIRFLOW__CLARA__GPUS": "0,1", "AIRFLOW__CLARA__GPU_ASSIGNMENT": "visible_devices",
            "AIRFLOW__CLARA__GPU_STATE_DIR": str(home / "gpus")}
    airflow = start(home / "airflow", sorted(sources.glob("*.yaml")), dict(os.environ),
                    overrides={"AIRFLOW__CLARA__REAPER_SCHEDULE": "* * * * *", "AIRFLOW__CLARA__STEP_GRACE": "0", **gpus})
    airflow.env = {**os.environ, "AIRFLOW_HOME": str(airflow.home), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",  # type: ignore[attr-defined]
                   "AIRFLOW__CLARA__OUTPUT_ROOT": str(airflow.output), "AIRFLOW__CLARA__PAYLOAD_ROOT": str(airflow.payload),
                   "AIRFLOW__CORE__DAGS_FOLDER": str(airflow.home / "dags"), **gpus}
    inbox.mkdir(parents=True)
    try:
        for dag_id in ("it-overlap", "it-abandon", "it-gpu", "it-gpu-service", "it-gpu-kill", "it-retention",
                       "it-retention-busy", "clara_service_reaper"):
            wait(lambda d=dag_id: _parsed(airflow, d), 90, f"{dag_id} was not parsed; see {airflow.home}")
        yield airflow
    finally:
        airflow.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(airflow.home / "standalone.log", ARTIFACTS / "standalone.log")
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
    # Airflow may still run the teardown (release_leases) of a run marked failed, and then the lease goes
    # at once; the step container is the reaper's alone, whatever the teardown did. The reaper runs every
    # minute: within two periods (a pass that began just before the run ended sees it running).
    wait(lambda: not leases(), 150, "neither the teardown nor the reaper released the failed run's lease")
    wait(lambda: not docker_cli.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={run_id}"}),
         150 - (time.monotonic() - marked), f"the dead worker's step container {containers[0].name} was not removed "
         "within two reaper periods")
    assert time.monotonic() - marked < 180
    reaped = airflow.api("/api/v2/dags/clara_service_reaper/dagRuns?state=success&limit=5")["dag_runs"]
    assert reaped, "no reaper run succeeded"


# -- GPUs of one Docker host ------------------------------------------------------------------------------
def cli_json(airflow: Standalone, *args: str) -> Any:
    """``clara-airflow <args> --json``, as an operator runs it on the worker's host."""
    import subprocess
    import sys

    done = subprocess.run([str(Path(sys.executable).parent / "clara-airflow"), *args, "--json"], capture_output=True,
                          text=True, env=airflow.env, timeout=120)  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def gpus_now(airflow: Standalone) -> list[dict[str, Any]]:
    return list(cli_json(airflow, "gpus"))


def timeline(airflow: Standalone, dag_id: str, run_id: str, steps: list[str]) -> list[dict[str, Any]]:
    root = airflow.output / dag_id / run_id
    return [{"step": step, "gpu": (root / step / "gpu").read_text().strip(),
             "start": int((root / step / "start").read_text()), "end": int((root / step / "end").read_text())}
            for step in steps]


def assert_exclusive(spans: list[dict[str, Any]]) -> None:
    """No two steps held one GPU at the same time (times in whole seconds: one may start as another ends)."""
    for a in spans:
        for b in spans:
            if a is not b and a["gpu"] == b["gpu"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], f"{a} and {b} shared GPU {a['gpu']}"


def test_four_one_gpu_steps_run_two_at_a_time_each_on_its_own_gpu(airflow: Standalone) -> None:
    run_id = "manual__gpus"
    trigger(airflow, "it-gpu", run_id)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while run_of(airflow, "it-gpu", run_id)["state"] not in ("success", "failed") and time.monotonic() < deadline:
        held = [row for row in gpus_now(airflow) if row["holder"]]
        if len(held) == 2 and not seen:
            seen = held  # both GPUs taken, while two more steps wait
        time.sleep(1)
    assert run_of(airflow, "it-gpu", run_id)["state"] == "success"
    spans = timeline(airflow, "it-gpu", run_id, ["seg-a", "seg-b", "seg-c", "seg-d"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "gpu-timeline.json").write_text(json.dumps({"steps": spans, "gpus --json while running": seen},
                                                            indent=1))
    assert sorted({s["gpu"] for s in spans}) == ["0", "1"], spans  # each step saw exactly one of the two
    assert_exclusive(spans)
    for moment in range(min(s["start"] for s in spans), max(s["end"] for s in spans)):
        assert sum(s["start"] <= moment < s["end"] for s in spans) <= 2, spans
    assert {row["holder"]["dag_id"] for row in seen} == {"it-gpu"} and len(seen) == 2
    logs = "".join(p.read_text(errors="replace") for p in (airflow.home / "logs").rglob("*")
                   if p.is_file() and "it-gpu/" in str(p) and "run_id=manual__gpus" in str(p))
    assert "waiting for 1 GPU(s): 0 of 2 free; held by: GPU 0: it-gpu / manual__gpus / seg-" in logs
    assert gpus_now(airflow) == [{"device": "0", "holder": None}, {"device": "1", "holder": None}]


def test_a_service_holds_its_gpu_while_its_steps_share_the_other(airflow: Standalone, docker_cli: Any) -> None:
    run_id = "manual__gpu_service"
    trigger(airflow, "it-gpu-service", run_id)

    def both_held() -> list[dict[str, Any]] | None:
        rows = gpus_now(airflow)
        return rows if all(r["holder"] for r in rows) else None

    during = wait(both_held, 240, "the service and a step never held both GPUs")
    assert finished(airflow, "it-gpu-service", run_id)["state"] == "success"
    spans = timeline(airflow, "it-gpu-service", run_id, ["infer-a", "infer-b"])
    root = airflow.output / "it-gpu-service" / run_id
    service_gpu = (root / "infer-a" / "service-gpu").read_text().strip()
    (ARTIFACTS / "gpu-service-timeline.json").write_text(json.dumps(
        {"service": service_gpu, "steps": spans, "gpus --json while running": during}, indent=1))
    assert service_gpu in ("0", "1") and (root / "infer-b" / "service-gpu").read_text().strip() == service_gpu
    assert {s["gpu"] for s in spans} == {"1" if service_gpu == "0" else "0"}, spans
    assert_exclusive(spans)
    holders = {row["device"]: row["holder"] for row in gpus_now(airflow)}
    assert holders[service_gpu]["service"] and holders[service_gpu]["container"].startswith("clara-svc-")
    (service,) = docker_cli.containers.list(filters={"name": holders[service_gpu]["container"]})
    service.remove(force=True)  # stopped: its GPU is free again
    assert gpus_now(airflow) == [{"device": "0", "holder": None}, {"device": "1", "holder": None}]


def test_a_killed_steps_gpu_is_free_once_its_container_is_gone(airflow: Standalone, docker_cli: Any) -> None:
    from clara_airflow.backends.docker import LABEL_RUN_ID

    run_id = "manual__gpu_kill"
    trigger(airflow, "it-gpu-kill", run_id)
    step = wait(lambda: next((t for t in tasks_of(airflow, "it-gpu-kill", run_id)
                              if t["task_id"] == "hold" and t["state"] == "running"), None), 180, "the step never ran")
    (container,) = wait(lambda: docker_cli.containers.list(filters={"label": f"{LABEL_RUN_ID}={run_id}"}), 60,
                        "the step's container never started")
    held = [row for row in gpus_now(airflow) if row["holder"]]
    assert [(r["holder"]["task_id"], r["holder"]["container"]) for r in held] == [("hold", container.name)]
    assert _kill_worker_of(step["id"]), "the task process was not found"
    time.sleep(2)
    after_kill = [row for row in gpus_now(airflow) if row["holder"]]
    assert [r["holder"]["container"] for r in after_kill] == [container.name], "the container still runs on it"
    container.remove(force=True)  # as the reaper does once the run has ended
    assert gpus_now(airflow) == [{"device": "0", "holder": None}, {"device": "1", "holder": None}]
    airflow.api(f"/api/v2/dags/it-gpu-kill/dagRuns/{run_id}", {"state": "failed"}, method="PATCH")


# -- retention ------------------------------------------------------------------------------------------
def test_cleanup_takes_only_the_outputs_of_runs_that_ended_longer_ago_than_their_retention(airflow: Standalone) -> None:
    from clara_airflow.backends.layout import run_folder

    reaper = "/api/v2/dags/clara_service_reaper"
    airflow.api(reaper, {"is_paused": True}, method="PATCH")  # nothing deletes while the dry run looks
    try:
        trigger(airflow, "it-retention", "manual__old")
        assert finished(airflow, "it-retention", "manual__old")["state"] == "success"
        trigger(airflow, "it-retention-busy", "manual__busy")
        wait(lambda: [t for t in tasks_of(airflow, "it-retention-busy", "manual__busy") if t["state"] == "running"],
             180, "the busy run's step never ran")
        old = run_folder(str(airflow.output), "it-retention", "manual__old")
        busy = run_folder(str(airflow.output), "it-retention-busy", "manual__busy")
        wait(lambda: (busy / "work" / "partial.txt").exists(), 60, "the busy step wrote nothing")
        time.sleep(6)  # the old run ended more than its 5 s ago
        dry = cli_json(airflow, "cleanup", "--dry-run")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "cleanup-dry-run.json").write_text(json.dumps(dry, indent=1))
        assert [(i["path"], i["kind"]) for i in dry["delete"]] == [(str(old), "outputs")]
        assert dry["delete"][0]["reason"].startswith("run manual__old success, ended ")
        assert dry["bytes"] == dry["delete"][0]["bytes"] > 0
        assert [(i["path"], i["reason"]) for i in dry["keep"]] == [(str(busy), "run manual__busy is running")]
        assert old.is_dir(), "a dry run deletes nothing"
    finally:
        airflow.api(reaper, {"is_paused": False}, method="PATCH")
    trigger(airflow, "clara_service_reaper", "manual__cleanup")  # its clara_cleanup reads end dates in a task
    assert finished(airflow, "clara_service_reaper", "manual__cleanup")["state"] == "success"
    assert not old.exists() and (busy / "work" / "partial.txt").exists()
    airflow.api("/api/v2/dags/it-retention-busy/dagRuns/manual__busy", {"state": "failed"}, method="PATCH")
