"""Batch benchmark: N studies through a 3-step pipeline with one shared service, against the floor.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_batch.py [--studies 50] [--per-run 10]

Measured one after the other in one process, on the local Docker engine:

- ``floor``: the same containers started by a plain Python script with the Docker SDK: the service
  once, then for each study its 3 steps one after the other (create, start, wait, remove), with the
  same mounts. One study at a time, one step at a time: the concurrency ``dag.test()`` runs tasks with.
- ``batch``: one batch run of the compiled pipeline (``x-airflow.batch``) with ``dag.test()``: the
  studies are selected and claimed, the service ensured once, one mapped branch per study (3 steps and
  the study's record), then the summary.
- ``run per study`` (the other design): one DAG run per study (``clara_payload`` = the study), each
  ensuring the service, running the 3 steps and releasing its lease; timed on ``--per-run`` studies
  and scaled to N.

Prints the times, the ratio batch / floor (target <= 1.5x, stretch 1.2x), studies per hour (target
>= 2,250) and where the time goes. The service must start exactly once for the batch.

``--scheduler`` measures instead how a hospital runs it: the batch under ``airflow standalone`` (its
scheduler, LocalExecutor with parallelism 4, ``clara_airflow.preload`` in ``airflow_local_settings.py``;
``--no-preload`` leaves it out), triggered through the REST API, against a floor that runs the same
containers from 4 threads with the Docker SDK (4 studies at a time, each study's steps in order). Target
<= 1.5x (stretch 1.25x). Both start from an empty inbox of their own; the batch counts only when its
own summary shows every study done in that run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="clara-bench-batch-"))
NETWORK = "clara-airflow-bench"
INBOX = WORK / "inbox"
os.environ.update({
    "AIRFLOW_HOME": str(WORK / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(WORK / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CLARA__OUTPUT_ROOT": str(WORK / "output"),
    "AIRFLOW__CLARA__PAYLOAD_ROOT": str(INBOX), "AIRFLOW__CLARA__NETWORK": NETWORK,
    "AIRFLOW__CLARA__SERVICES_DATA_DIR": str(WORK / "service-data"),
})
sys.path.insert(0, str(REPO))
from benchlib import (  # noqa: E402 - after the path is set
    WEB_STEPS,
    cpu_by_component,
    machine_busy,
    task_instances,
    web_pipeline,
    web_service,
)

DAG_ID = "bench-batch"
IMAGE = "clara-airflow/busybox:1"
# The service: a tiny HTTP server; a unique argument gives this benchmark its own service identity.
SERVICE = web_service("bench-batch")
STEPS = WEB_STEPS


def pipeline() -> str:
    return web_pipeline(DAG_ID, INBOX, SERVICE)


def make_studies(count: int, prefix: str) -> list[Path]:
    folders = []
    for n in range(count):
        folder = INBOX / f"{prefix}{n:04d}"
        folder.mkdir(parents=True)
        (folder / "study.txt").write_text(f"study {n}\n")
        (folder / ".complete").write_text("")
        folders.append(folder)
    return folders


def run_step(client: Any, study: Path, out: Path, step: tuple[str, str, str | None], host: str) -> float:
    """One step's container as the floor runs it (create, start, wait, remove); returns its seconds."""
    from docker.types import Mount

    name, script, source = step
    (out / name).mkdir(parents=True)
    mounts = [Mount("/in", str(out / source if source else study), type="bind", read_only=True),
              Mount("/out", str(out / name), type="bind")]
    began = time.perf_counter()
    container = client.containers.create(IMAGE, ["/bin/sh", "-c", script], mounts=mounts,
                                         environment={"WEB": host}, network=NETWORK)
    container.start()
    status = container.wait()["StatusCode"]
    container.remove(force=True)
    if status != 0:
        raise SystemExit(f"floor: step {name} of {study.name} exited {status}")
    return time.perf_counter() - began


def floor(client: Any, studies: list[Path]) -> tuple[float, list[float]]:
    """The Docker SDK alone: the service once, then every study's steps in order. Returns (seconds,
    per-container seconds)."""
    began = time.perf_counter()
    service = client.containers.run(IMAGE, SERVICE, name="clara-bench-floor-service", detach=True, network=NETWORK)
    each: list[float] = []
    try:
        for study in studies:
            each += [run_step(client, study, WORK / "floor" / study.name, step, "clara-bench-floor-service:8080")
                     for step in STEPS]
    finally:
        service.remove(force=True)
    return time.perf_counter() - began, each


def floor_threads(client: Any, studies: list[Path], threads: int = 4) -> float:
    """:func:`floor` with ``threads`` studies at a time (the scheduler's parallelism)."""
    from concurrent.futures import ThreadPoolExecutor

    began = time.perf_counter()
    service = client.containers.run(IMAGE, SERVICE, name="clara-bench-floor-service", detach=True, network=NETWORK)

    def one(study: Path) -> None:
        for step in STEPS:
            run_step(client, study, WORK / "floor4" / study.name, step, "clara-bench-floor-service:8080")

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, studies))
    finally:
        service.remove(force=True)
    return time.perf_counter() - began


def scheduler_leg(studies: int, preload: bool) -> None:
    """The batch under ``airflow standalone`` against :func:`floor_threads`; prints both and the ratio."""
    import docker

    from clara_airflow.backends.docker import LABEL_ID
    from tests.browser.standalone import start

    client = docker.from_env()
    if not any(n.name == NETWORK for n in client.networks.list(names=[NETWORK])):
        client.networks.create(NETWORK)
    INBOX.mkdir()
    cpu = [(machine_busy(), cpu_by_component(os.getpid()), time.process_time())]
    floor_s = floor_threads(client, make_studies(studies, "f"))
    cpu.append((machine_busy(), cpu_by_component(os.getpid()), time.process_time()))
    shutil.rmtree(INBOX)
    INBOX.mkdir()
    (WORK / "pipeline").mkdir()
    (WORK / "pipeline" / f"{DAG_ID}.yaml").write_text(pipeline())
    airflow = start(WORK / "standalone", [WORK / "pipeline" / f"{DAG_ID}.yaml"], dict(os.environ), timeout=240,
                    overrides={"AIRFLOW__CLARA__PAYLOAD_ROOT": str(INBOX)}, preload=preload)
    try:
        deadline = time.monotonic() + 180
        while not _exists(airflow, f"/api/v2/dags/{DAG_ID}"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{DAG_ID} never appeared; see {airflow.home / 'standalone.log'}")
            time.sleep(1)
        make_studies(studies, "s")
        run_id = f"batch-{int(time.time())}"
        began, since = time.perf_counter(), time.time()
        cpu.append((machine_busy(), cpu_by_component(airflow.process.pid), time.process_time()))
        airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {}})
        while (state := airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]) not in ("success", "failed"):
            if time.perf_counter() - began > 1800:
                raise SystemExit("the batch did not end within 30 minutes")
            time.sleep(0.5)
        batch_s = time.perf_counter() - began
        cpu.append((machine_busy(), cpu_by_component(airflow.process.pid), time.process_time()))
        instances, until = task_instances(airflow.api, DAG_ID, run_id), time.time()
        summary = json.loads((airflow.output / DAG_ID / run_id / "batch-summary.json").read_text())
        services = [c for c in client.containers.list(all=True, filters={"label": LABEL_ID})
                    if "bench-batch" in " ".join(c.attrs["Config"]["Cmd"] or [])]
    finally:
        airflow.stop()
        for container in client.containers.list(all=True, filters={"label": LABEL_ID}):
            if "bench-batch" in " ".join(container.attrs["Config"]["Cmd"] or []):
                container.remove(force=True)
    if state != "success" or summary["succeeded"] != studies:
        raise SystemExit(f"the batch ended {state} with {summary['succeeded']} of {studies} studies done; "
                         f"see {airflow.home}")
    print(f"{studies} studies x {len(STEPS)} steps, one shared service; airflow standalone (LocalExecutor, "
          f"parallelism 4, preload {'on' if preload else 'off'}) against 4 threads of the Docker SDK")
    print(f"floor (4 threads):       {floor_s:7.1f} s   {3600 * studies / floor_s:8.0f} studies/hour")
    print(f"batch under the scheduler: {batch_s:7.1f} s   {3600 * studies / batch_s:8.0f} studies/hour   ratio "
          f"{batch_s / floor_s:.2f}x the floor (target <= 1.5x, stretch 1.25x); {summary['succeeded']} studies "
          f"done in this run, {len(services)} service instance")
    print("\nCPU seconds during each (2 cores: wall x 2 is the machine's whole budget; 'other' is what no "
          "component below holds: exited container shims with their runc, the containers, the rest of the machine):")
    for name, wall, (busy0, parts0, own0), (busy1, parts1, own1) in (("floor", floor_s, *cpu[:2]),
                                                                    ("batch", batch_s, *cpu[2:])):
        parts = {n: parts1[n] - parts0.get(n, 0.0) for n in parts1}
        parts["benchmark"] = own1 - own0
        listed = "  ".join(f"{n} {v:.1f}" for n, v in sorted(parts.items()) if v >= 0.05)
        print(f"  {name:6} machine {busy1 - busy0:6.1f} of {2 * wall:6.1f}   {listed}  other "
              f"{busy1 - busy0 - sum(parts.values()):.1f}")
    cores, batch_cpu = os.cpu_count() or 1, cpu[3][0] - cpu[2][0]
    airflow_cpu = sum(cpu[3][1].get(n, 0.0) - cpu[2][1].get(n, 0.0) for n in ("scheduler", "api-server",
                                                                              "dag-processor", "triggerer"))
    print(f"  the batch's CPU alone needs {batch_cpu / cores:.1f} s of this machine's {cores} cores: "
          f"{batch_cpu / cores / floor_s:.2f}x the floor even if nothing ever waited; Airflow's components used "
          f"{airflow_cpu / len(instances):.2f} CPU s per task instance ({len(instances)} task instances)")
    slots(instances, batch_s)
    api_requests(airflow.home / "standalone.log", since, until, len(instances))


def slots(instances: list[dict[str, Any]], wall: float, parallelism: int = 4) -> None:
    """Where the batch's task time went: tasks running (start -> end, by task) and how many task instances
    were running, and queued or running, on average over the batch (the executor has ``parallelism``
    slots; queued -> start is the hand-out, the task process's start and the task runner until it reports
    running, slowed by whatever else wants the CPU)."""
    from datetime import datetime

    def at(text: str | None) -> float:
        return datetime.fromisoformat(text).timestamp() if text else float("nan")

    running: dict[str, list[float]] = {}
    starting: list[float] = []
    held = 0.0
    for ti in instances:
        queued, start, end = at(ti["queued_when"]), at(ti["start_date"]), at(ti["end_date"])
        if end == end and start == start:
            running.setdefault(ti["task_id"], []).append(end - start)
            if queued == queued:
                starting.append(start - queued)
                held += end - queued
    busy = sum(sum(v) for v in running.values())
    timeline = REPO / "artifacts" / "bench_batch" / "task-instances.json"
    timeline.parent.mkdir(parents=True, exist_ok=True)
    timeline.write_text(json.dumps(instances, indent=1))
    print(f"\nthe batch's {len(instances)} task instances ({parallelism} executor slots; all of them in {timeline}):")
    for task_id, seconds in sorted(running.items()):
        print(f"    {task_id:<36} x{len(seconds):<4} running (start -> end) median {statistics.median(seconds):.2f} s")
    print(f"  on average {busy / wall:.1f} task instances running and {held / wall:.1f} queued or running; "
          f"queued -> start median {statistics.median(starting):.2f} s")


def api_requests(log: Path, since: float, until: float, tasks: int) -> None:
    """Execution API requests the api-server answered between ``since`` and ``until`` (its access log in
    standalone.log), per kind of request and per task instance."""
    import re
    from collections import Counter
    from datetime import datetime

    kinds: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        found = re.match(r"api-server \| (\S+Z) .*request finished.* method=(\w+) path=(/execution/\S*)", line)
        if not found or not since <= datetime.fromisoformat(found[1]).timestamp() <= until:
            continue
        parts = [p if len(p) < 30 and not re.search(r"\d{4}-\d\d-\d\d", p) else "*"
                 for p in found[3].split("/")[2:]]
        kinds[f"{found[2]} /{'/'.join(parts[:1] + ['*'] * (len(parts) > 1) + parts[-1:] * (len(parts) > 2))}"] += 1
    total = sum(kinds.values())
    print(f"\nExecution API requests during the batch: {total}, {total / max(1, tasks):.1f} per task instance")
    for kind, count in kinds.most_common(12):
        print(f"    {kind:<48} {count:6d}  {count / max(1, tasks):5.2f} per task")


def _exists(airflow: Any, path: str) -> bool:
    import urllib.error

    try:
        airflow.api(path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def task_times(dr: Any) -> tuple[dict[str, list[float]], float]:
    """Seconds per task kind (by task id), and the summed task time of the run."""
    kinds: dict[str, list[float]] = {}
    total = 0.0
    for ti in dr.get_task_instances():
        if ti.start_date and ti.end_date:
            seconds = (ti.end_date - ti.start_date).total_seconds()
            kinds.setdefault(ti.task_id, []).append(seconds)
            total += seconds
    return kinds, total


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Airflow's task logs go to WORK/airflow.log, not the terminal (they are written to the process's
    own stdout/stderr, so those are redirected at the file-descriptor level)."""
    sys.stdout.flush()
    saved = os.dup(1), os.dup(2)
    with open(WORK / "airflow.log", "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def timed(dag: Any, what: str, **conf: str) -> tuple[Any, float]:
    """One quiet ``dag.test()``: (the run, its seconds); a run that does not succeed ends the benchmark."""
    began = time.perf_counter()
    with quiet():
        dr = dag.test(run_conf=conf or None)
    if str(dr.state) != "success":
        raise SystemExit(f"{what} ended {dr.state}; see {WORK / 'airflow.log'}")
    return dr, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--per-run", type=int, default=10, help="studies timed for the run-per-study design")
    parser.add_argument("--scheduler", action="store_true", help="under airflow standalone against 4 threads")
    parser.add_argument("--no-preload", action="store_true", help="--scheduler without clara_airflow.preload")
    args = parser.parse_args()
    if args.scheduler:
        try:
            scheduler_leg(args.studies, preload=not args.no_preload)
        finally:
            shutil.rmtree(WORK, ignore_errors=True)
        return
    import docker

    client = docker.from_env()
    if not any(n.name == NETWORK for n in client.networks.list(names=[NETWORK])):
        client.networks.create(NETWORK)
    dags = WORK / "dags"
    dags.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", dags)
    (dags / f"{DAG_ID}.yaml").write_text(pipeline())
    logging.disable(logging.WARNING)
    from airflow.utils import db

    from clara_airflow.airflow_compat import dagbag
    from clara_airflow.backends.docker import LABEL_ID
    from clara_airflow.services.records import clear_record

    db.resetdb()
    bag = dagbag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[DAG_ID]
    INBOX.mkdir()
    _, empty_s = timed(dag, "the empty batch run")  # also the warm-up: the first run starts the in-process API
    studies = make_studies(args.studies, "s")

    def service_containers() -> list[Any]:
        return [c for c in client.containers.list(all=True, filters={"label": LABEL_ID})
                if "bench-batch" in " ".join(c.attrs["Config"]["Cmd"] or [])]

    def drop_service() -> None:
        for container in service_containers():
            clear_record(container.labels[LABEL_ID])
            container.remove(force=True)

    floor_s, each = floor(client, studies)
    drop_service()
    dr, batch_s = timed(dag, "the batch run")
    kinds, busy = task_times(dr)
    ensure = [k for k in kinds if k.startswith("clara_services.ensure_")]
    instances = len(service_containers())
    _, again_s = timed(dag, "the second batch run")  # every study is done: a batch with 0 studies
    drop_service()

    per_run = make_studies(args.per_run, "r")
    per_study_runs = sum(timed(dag, "a run per study", clara_payload=str(study))[1] for study in per_run) / args.per_run
    drop_service()

    n = args.studies
    print(f"{n} studies x {len(STEPS)} steps (busybox, almost no work), one shared service; dag.test() runs one task "
          "at a time, the floor one container at a time")
    print(f"floor (Docker SDK script):        {floor_s:7.1f} s   {3600 * n / floor_s:8.0f} studies/hour")
    print(f"batch run (one run, {n} branches): {batch_s:7.1f} s   {3600 * n / batch_s:8.0f} studies/hour   "
          f"ratio {batch_s / floor_s:.2f}x the floor (target <= 1.5x, stretch 1.2x)")
    print(f"one run per study ({args.per_run} timed):     {per_study_runs * n:7.1f} s   "
          f"{3600 / per_study_runs:8.0f} studies/hour   ratio {per_study_runs * n / floor_s:.2f}x the floor "
          f"(scaled to {n})")
    print(f"the next batch (all {n} done, 0 taken): {again_s:.1f} s (the very first, empty, run of the process, "
          f"which starts Airflow's in-process API: {empty_s:.1f} s)")
    print(f"service instances after the batch: {instances} (none before it; ensure tasks run: {len(ensure)})")
    print("\nwhere the batch's time goes (median seconds per task):")
    container = statistics.median(each)
    print(f"  container create+start+wait+remove alone (floor): {container:.3f}")
    for kind in sorted(kinds):
        print(f"  {kind:<36} x{len(kinds[kind]):<4} {statistics.median(kinds[kind]):.3f}")
    step_median = statistics.median(sum((kinds[f"study.{s}"] for s, _, _ in STEPS), []))
    print(f"  per step task beyond its container: {step_median - container:.3f}  "
          f"(the DockerOperator's log streaming, the payload and layout checks, XCom pulls, task bookkeeping)")
    print(f"  between tasks (wall - summed task time): {batch_s - busy:.1f} s in all, "
          f"{(batch_s - busy) / max(1, len(dr.get_task_instances())):.3f} per task (scheduling in dag.test)")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
