"""Leases and the idle reaper against real Docker and real `airflow dags test` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.docker import LABEL_ID
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.compiler.identity import service_name
from clara_airflow.services.admin import collect_services
from clara_airflow.services.leases import leases, live_leases, take_lease
from clara_airflow.services.records import read_record, service_view
from clara_airflow.spec.load import load_pipeline
from tests.conftest import DAGS

pytestmark = [pytest.mark.docker, pytest.mark.slow]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def sid_of(dag_id: str) -> str:
    (svc,) = compile_pipeline(load_pipeline(DAGS / f"{dag_id}.yaml")).services
    return svc.id


def dags_test(dag_id: str, payload: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.Popen([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps({"clara_payload": str(payload)})],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def running(docker_cli: Any, sid: str) -> bool:
    return any(c.status == "running" for c in docker_cli.containers.list(filters={"label": f"{LABEL_ID}={sid}"}))


def test_held_service_survives_ttl_0_and_is_stopped_after_the_run(airflow_db: None, docker_cli: Any,
                                                                   tmp_path: Path) -> None:
    sid = sid_of("it-hold")
    proc = dags_test("it-hold", tmp_path)
    try:
        wait_for(lambda: live_leases(sid), 90, "the run's lease")
        # While the step runs, its heartbeat ([clara] service_heartbeat = 1 s in tests) moves last_used on.
        first = wait_for(lambda: service_view(sid).last_used, 30, "the service record")
        wait_for(lambda: service_view(sid).last_used > first, 30, "a last_used heartbeat")
        report = collect_services(ttl_override=0)
        assert f"keeping clara-svc-{sid}: held by 1 DAG run(s)" in report
        assert running(docker_cli, sid)
        (tmp_path / "release").write_text("done")
        out, _ = proc.communicate(timeout=120)
        assert "state=success" in out, out[-3000:]
    finally:
        proc.kill()
    assert leases(sid) == []
    report = collect_services(ttl_override=0)
    assert any(line.startswith(f"stopped clara-svc-{sid}; record cleared (idle") for line in report), report
    assert not running(docker_cli, sid)
    assert read_record(sid) is None and service_view(sid).uses == ()


def test_lease_of_a_run_that_is_not_running_is_stale(airflow_db: None) -> None:
    take_lease("feedfacecafe", "it-hold", "manual__killed-worker-run")
    assert [x.run_id for x in leases("feedfacecafe")] == ["manual__killed-worker-run"]
    assert live_leases("feedfacecafe") == []
    assert leases("feedfacecafe") == []


def test_lease_of_a_killed_run_is_stale_once_airflow_ends_the_run(airflow_db: None, docker_cli: Any,
                                                                   tmp_path: Path) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    sid = sid_of("it-hold")
    proc = dags_test("it-hold", tmp_path)
    try:
        (held,) = wait_for(lambda: live_leases(sid), 90, "the run's lease")
        # the lease is taken first, then a provisional record, then the container starts (services/ensure.py):
        # the worker dies once the service runs, not while it is still being created
        wait_for(lambda: read_record(sid), 30, "the record, written before the step runs")
        wait_for(lambda: docker_cli.containers.list(filters={"label": f"{LABEL_ID}={sid}", "status": "running"}), 60,
                 "the service's container running")
    finally:
        proc.kill()  # the worker dies: no teardown runs, the lease stays behind
        proc.wait()
    assert [x.run_id for x in leases(sid)] == [held.run_id]
    with create_session() as session:  # what the scheduler does once it finds the run's task dead
        run = session.query(DagRun).filter_by(dag_id="it-hold", run_id=held.run_id).one()
        run.state = DagRunState.FAILED
    assert live_leases(sid) == []
    report = collect_services(ttl_override=0)
    assert any(line.startswith(f"stopped clara-svc-{sid}") for line in report), report


def test_eight_concurrent_runs_of_two_pipelines_share_one_service(airflow_db: None, docker_cli: Any,
                                                                   tmp_path: Path) -> None:
    sid = sid_of("it-shared")
    assert sid_of("it-shared-b") == sid
    (tmp_path / "study.txt").write_text("x")
    # Each `airflow dags test` first syncs the DAG rows; eight first-time inserts at once would race
    # in Airflow itself (UNIQUE dag.dag_id), so serialize them once before the concurrent runs.
    subprocess.run([AIRFLOW, "dags", "reserialize"], check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    procs = [dags_test("it-shared" if n % 2 else "it-shared-b", tmp_path) for n in range(8)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    try:
        assert all("state=success" in out for out in outputs), [o[-2000:] for o in outputs if "state=success" not in o]
        assert len(docker_cli.containers.list(all=True, filters={"label": f"{LABEL_ID}={sid}"})) == 1
        started = sum(f"service {service_name(sid)} started" in out for out in outputs)
        assert started <= 1
        released = sum(f"on clara-svc-{sid}" in out and "released the lease" in out for out in outputs)
        assert released == 8
        assert leases(sid) == []
        # Each pipeline's use has its own key: none is lost to a concurrent write.
        assert service_view(sid).as_row()["pipelines"] == ["it-shared", "it-shared-b"]
    finally:
        for c in docker_cli.containers.list(all=True, filters={"label": f"{LABEL_ID}={sid}"}):
            c.remove(force=True)
