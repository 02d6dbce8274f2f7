"""The GPU allocator of one Docker host (clara_airflow.backends.gpus): exclusive across processes, a dead
holder's devices come back, waiting says who holds them. Real processes, a real flock, a real /proc."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.gpus import POLL, GpuPool, GpuWaitTimeout, Holder, detect, process_alive, start_time
from clara_airflow.errors import ClaraAirflowError

FORK = multiprocessing.get_context("fork")


def no_containers(name: str) -> str | None:
    return None


def mine(container: str) -> Holder:
    pid = os.getpid()
    return Holder(container=container, pid=pid, started=start_time(pid), since=time.time(), dag_id="d", run_id="r",
                  task_id=container)


def _racer(state: str, index: int, barrier: Any, results: Any, done: Any) -> None:
    pool = GpuPool(["0", "1"], state, no_containers)
    barrier.wait()
    try:
        results.put((index, pool.take(1, mine(f"step-{index}"), wait=0)))
    except GpuWaitTimeout:
        results.put((index, None))
    done.wait(30)  # alive, so its devices stay held while the others try


def test_processes_racing_for_two_gpus_get_two_different_ones(tmp_path: Path) -> None:
    barrier, results, done = FORK.Barrier(8), FORK.Queue(), FORK.Event()
    racers = [FORK.Process(target=_racer, args=(str(tmp_path), i, barrier, results, done)) for i in range(8)]
    for racer in racers:
        racer.start()
    try:
        got = dict(results.get(timeout=30) for _ in racers)
    finally:
        done.set()
        for racer in racers:
            racer.join(30)
    winners = {i: devices for i, devices in got.items() if devices}
    assert sorted(d for devices in winners.values() for d in devices) == ["0", "1"], got
    held = json.loads((tmp_path / "holders.json").read_text())
    assert {device: h["container"] for device, h in held.items()} == {
        devices[0]: f"step-{i}" for i, devices in winners.items()}


def _take_and_die(state: str) -> None:
    GpuPool(["0"], state, no_containers).take(1, mine("gone"), wait=0)
    os._exit(0)  # killed, as far as the pool can tell: no release


def test_a_holder_whose_process_died_before_its_container_existed_frees_its_gpu(tmp_path: Path) -> None:
    child = FORK.Process(target=_take_and_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    assert json.loads((tmp_path / "holders.json").read_text())["0"]["container"] == "gone"
    assert GpuPool(["0"], tmp_path, no_containers).take(1, mine("next"), wait=0) == ["0"]


def test_a_container_left_running_by_a_killed_task_keeps_its_gpu_until_it_is_gone(tmp_path: Path) -> None:
    containers = {"orphan": "running"}
    pool = GpuPool(["0"], tmp_path, containers.get)
    child = FORK.Process(target=_take_and_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    record = json.loads((tmp_path / "holders.json").read_text())
    record["0"]["container"] = "orphan"  # the dead task's container, which the engine still runs
    (tmp_path / "holders.json").write_text(json.dumps(record))
    with pytest.raises(GpuWaitTimeout, match="orphan"):
        pool.take(1, mine("next"), wait=0)
    containers["orphan"] = "exited"
    assert pool.take(1, mine("next"), wait=0) == ["0"]


def test_a_reused_process_id_is_not_the_holder() -> None:
    assert process_alive(os.getpid(), start_time(os.getpid()))
    assert not process_alive(os.getpid(), start_time(os.getpid()) + 1)
    assert not process_alive(0, 0)


def test_an_engine_that_cannot_be_asked_keeps_the_holder(tmp_path: Path) -> None:
    def down(name: str) -> str | None:
        raise ConnectionError("engine down")

    stale = Holder(container="c", pid=0)  # no process any more: only the container could keep it
    assert GpuPool(["0"], tmp_path, down).alive(stale) is True
    assert GpuPool(["0"], tmp_path, no_containers).alive(stale) is False


def test_a_released_step_keeps_its_gpu_while_its_container_still_runs(tmp_path: Path) -> None:
    containers: dict[str, str] = {}
    pool = GpuPool(["0", "1"], tmp_path, containers.get)
    assert pool.take(1, mine("a"), wait=0) == ["0"]
    containers["a"] = "running"
    pool.release("a")
    assert pool.holders()["0"] is not None and pool.holders()["0"].pid == 0  # type: ignore[union-attr]
    del containers["a"]
    pool.release("a")
    assert pool.holders() == {"0": None, "1": None}


def test_a_service_hands_its_gpu_to_its_container(tmp_path: Path) -> None:
    containers: dict[str, str] = {}
    pool = GpuPool(["0", "1"], tmp_path, containers.get)
    pool.take(1, Holder(container="clara-svc-x", pid=os.getpid(), started=start_time(os.getpid()), service="x"), wait=0)
    containers["clara-svc-x"] = "running"
    pool.hand_over("clara-svc-x")
    assert pool.holders()["0"] == Holder(container="clara-svc-x", service="x")
    assert pool.take(1, mine("step"), wait=0) == ["1"]


def test_the_same_container_gets_its_own_devices_back(tmp_path: Path) -> None:
    pool = GpuPool(["0", "1", "2"], tmp_path, no_containers)
    assert pool.take(1, mine("other"), wait=0) == ["0"]
    assert pool.take(2, mine("svc"), wait=0) == ["1", "2"]
    assert pool.take(2, mine("svc"), wait=0) == ["1", "2"]


def test_waiting_says_who_holds_and_ends_when_one_is_freed(tmp_path: Path, caplog: Any) -> None:
    pool = GpuPool(["0"], tmp_path, no_containers)
    pool.take(1, mine("first"), wait=0)
    threading.Timer(1.0, pool.release, args=("first",)).start()
    log = logging.getLogger("test.gpus")
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="test.gpus"):
        assert pool.take(1, mine("second"), wait=30, log=log) == ["0"]
    assert time.monotonic() - began < 1.0 + POLL + 1
    assert "waiting for 1 GPU(s): 0 of 1 free; held by: GPU 0: d / r / first (container first)" in caplog.text


def test_a_wait_that_runs_out_names_the_holders_and_looks_at_most_every_5_s(tmp_path: Path) -> None:
    pool = GpuPool(["0", "1"], tmp_path, no_containers)
    pool.take(2, mine("big"), wait=0)
    now = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    with pytest.raises(GpuWaitTimeout) as caught:
        pool.take(1, mine("late"), wait=60, clock=lambda: now[0], sleep=sleep)
    assert "1 GPU(s) requested, 0 of 2 free after waiting 60 s" in str(caught.value)
    assert "GPU 0: d / r / big (container big); GPU 1: d / r / big (container big)" in str(caught.value)
    assert naps and max(naps) <= 5 and sum(naps) == 60


def test_more_than_the_host_has_is_an_error_with_the_numbers(tmp_path: Path) -> None:
    with pytest.raises(ClaraAirflowError, match=r"requests.gpu is 3, but this Docker host has 2 GPU\(s\) "
                                                r"\(\[clara\] gpus = 0,1\)"):
        GpuPool(["0", "1"], tmp_path, no_containers).take(3, mine("x"), wait=60)


def test_a_damaged_record_is_a_clear_error_not_a_guess(tmp_path: Path) -> None:
    (tmp_path / "holders.json").write_text("{not json")
    with pytest.raises(ClaraAirflowError, match="holders.json is not valid JSON.*remove it once no GPU step"):
        GpuPool(["0"], tmp_path, no_containers).holders()


def test_a_device_no_longer_listed_is_forgotten(tmp_path: Path) -> None:
    GpuPool(["0", "1"], tmp_path, no_containers).take(2, mine("a"), wait=0)
    assert GpuPool(["1"], tmp_path, no_containers).holders()["1"] is not None
    assert "0" not in json.loads((tmp_path / "holders.json").read_text())


def test_auto_finds_every_gpu_nvml_names_and_none_without_a_driver(monkeypatch: Any) -> None:
    import sys
    import types

    from clara_airflow.backends.docker_gpus import inventory
    from clara_airflow.settings import Deployment

    assert detect() == ()  # nvidia-ml-py is installed here, the driver's library is not
    fake = types.SimpleNamespace(NVMLError=RuntimeError, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
                                 nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
                                 nvmlDeviceGetUUID=lambda h: [b"GPU-aaaa", "GPU-bbbb"][h])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert inventory(Deployment(gpus=("auto",))) == ("GPU-aaaa", "GPU-bbbb")
    assert inventory(Deployment(gpus=("0", "1"))) == ("0", "1") and inventory(Deployment()) is None


def test_the_gpu_check_skips_cleanly_without_gpus(tmp_path: Path) -> None:
    import subprocess

    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIP part 1" in done.stdout and "SKIP part 2: part 1 found no GPU" in done.stdout
