"""Faults on the CeleryExecutor cluster: the reaper beside live runs, and PostgreSQL restarted mid-run.

The reaper test needs the cluster's defaults (``[clara] service_idle_ttl = 60`` and the reaper every
minute, see scripts/cluster.sh)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.compiler.identity import VARIABLE_PREFIX
from clara_airflow.services.records import USE_PREFIX, BadRecord, ServiceRecord, ServiceUse, parse
from tests.distributed.client import CLUSTER, DAG_ID, REPO, Api, demo_service_id, phantom, when

pytestmark = [pytest.mark.distributed, pytest.mark.docker, pytest.mark.slow]
REAPER = "clara_service_reaper"


class Watch(threading.Thread):
    """Polls the live service containers of one identity twice a second: (time, container ids)."""

    def __init__(self, sid: str) -> None:
        super().__init__(daemon=True)
        self.sid, self.seen, self.stopped = sid, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            out = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter",
                                  f"label=clara-airflow/service-id={self.sid}"], capture_output=True, text=True).stdout
            self.seen.append((time.time(), out.split()))
            time.sleep(0.5)

    def ids_between(self, start: float, end: float) -> list[list[str]]:
        return [ids for at, ids in self.seen if start <= at <= end]


def trigger(api: Api, run_id: str, payload: Path) -> str:
    api.call(f"/api/v2/dags/{DAG_ID}/dagRuns",
             {"dag_run_id": run_id, "logical_date": None, "conf": {"clara_payload": str(payload)}})
    return run_id


def task_instances(api: Api, run_id: str) -> list[dict[str, Any]]:
    return api.call(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


def leases(api: Api) -> list[str]:
    return [v["key"] for v in api.call("/api/v2/variables?limit=1000")["variables"] if v["key"].startswith("clara_lease_")]


def test_the_reaper_never_stops_a_service_in_use_and_stops_it_once_idle(api: Api) -> None:
    payload, sid = phantom(), demo_service_id()
    api.settle(DAG_ID)
    watch = Watch(sid)
    watch.start()
    stamp = int(time.time())
    # 1. steady load for 150 s (a run every 6 s): the reaper runs at least twice meanwhile
    load_began = time.time()
    steady = []
    for n in range(25):
        steady.append(trigger(api, f"reap-{stamp}-load-{n:02d}", payload))
        time.sleep(6)
    api.wait_runs(DAG_ID, steady, seconds=900)
    load_ended = time.time()
    # 2. idle past the TTL, then a burst straddling the reaper's minute: each run either finds the service
    #    (and the reaper must leave it) or the reaper stopped it first (and the run starts a new one)
    time.sleep(65)
    time.sleep((58 - time.time() % 60) % 60)
    burst = []
    for n in range(5):
        burst.append(trigger(api, f"reap-{stamp}-burst-{n}", payload))
        time.sleep(2)
    runs = api.wait_runs(DAG_ID, steady + burst, seconds=900)
    done = time.time()
    # 3. idle again: stopped after the TTL (60 s) and the next reaper run (<= 60 s later)
    deadline = done + 60 + 60 + 60
    while time.time() < deadline and watch.seen[-1][1]:
        time.sleep(2)
    watch.stopped.set()
    watch.join()

    assert {r["state"] for r in runs.values()} == {"success"}, {k: v["state"] for k, v in runs.items()}
    retried = [(r, t["task_id"], t["try_number"]) for r in runs for t in task_instances(api, r) if t["try_number"] > 1]
    assert not retried, f"a retry would hide a service that vanished under a step: {retried}"
    during_load = watch.ids_between(load_began + 20, load_ended)
    assert during_load and all(len(ids) == 1 for ids in during_load), "the service was stopped under a steady load"
    assert len({ids[0] for ids in during_load}) == 1, "the service was replaced under a steady load"
    assert all(len(ids) <= 1 for _, ids in watch.seen), "two instances of one service were alive at once"
    reaps = [r for r in api.call(f"/api/v2/dags/{REAPER}/dagRuns?limit=1000")["dag_runs"]
             if load_began <= when(r["start_date"]) <= load_ended]
    assert len(reaps) >= 2 and {r["state"] for r in reaps} == {"success"}, reaps
    assert not watch.seen[-1][1], f"the idle service still runs {time.time() - done:.0f} s after the last run"
    assert not leases(api)


def pg_ctl(*args: str) -> None:
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(CLUSTER / "pg"), *args],
                   check=True, capture_output=True)


def test_postgres_restarted_mid_run_finishes_or_fails_clearly_and_a_cleared_run_succeeds(api: Api) -> None:
    payload, sid = phantom(), demo_service_id()
    api.settle(DAG_ID)
    stamp = int(time.time())
    run_ids = [trigger(api, f"pg-{stamp}-{n}", payload) for n in range(4)]
    deadline = time.monotonic() + 180
    while not any(t["state"] == "running" and not t["task_id"].startswith("clara_services.")
                  for t in task_instances(api, run_ids[0])):
        assert time.monotonic() < deadline, "no step started"
        time.sleep(0.5)
    pg_ctl("-m", "fast", "-w", "restart", "-l", str(CLUSTER / "logs" / "postgres.log"))
    # Components that lose the database may exit (the dag-processor and triggerer do, some seconds later).
    # A real deployment's supervisor restarts them; `cluster.sh up` does that here, and only that: every
    # running component is left alone.
    time.sleep(20)
    restart = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True)
    assert restart.returncode == 0, restart.stdout[-2000:] + restart.stderr[-2000:]
    restarted = [line.split(" starting ", 1)[1] for line in restart.stdout.splitlines() if " starting " in line]
    runs = api.wait_runs(DAG_ID, run_ids, seconds=900)
    failed = [r for r, data in runs.items() if data["state"] != "success"]
    for run_id in failed:  # clear the failed tasks and run again: must succeed
        api.call(f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                 {"dag_run_id": run_id, "only_failed": True, "dry_run": False, "reset_dag_runs": True})
    if failed:
        runs = api.wait_runs(DAG_ID, run_ids, seconds=900)
    print(f"\npostgres restarted mid-run: {len(run_ids) - len(failed)} runs finished, {len(failed)} failed and "
          f"were cleared; exited on the lost database and restarted by `up`: {', '.join(restarted) or 'none'}")
    assert {r["state"] for r in runs.values()} == {"success"}, {k: v["state"] for k, v in runs.items()}
    assert not leases(api)
    variables = api.call("/api/v2/variables?limit=1000")["variables"]
    for var in variables:  # nothing half-recorded: every service record and use parses
        kind = ServiceRecord if var["key"].startswith(VARIABLE_PREFIX) else ServiceUse
        if var["key"].startswith((VARIABLE_PREFIX, USE_PREFIX)):
            assert not isinstance(parse(var["key"], var["value"], kind), BadRecord), var
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=clara-airflow/service-id={sid}"],
                         capture_output=True, text=True).stdout
    assert len(out.split()) == 1
