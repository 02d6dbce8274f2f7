"""The GPUs of one Docker host: its inventory (``[clara] gpus``) and their exclusive assignment.

Clara's ``requests.gpu: N`` means N devices that no other operator uses. On one Docker host the holders
are written in ``<gpu_state_dir>/holders.json``, changed only under an exclusive ``flock`` of
``<gpu_state_dir>/lock``: one assignment at a time across threads, task processes and workers of the
host. A holder is alive while its container exists and has not ended, or, before that container exists
(between the assignment and the start), while the process that took the devices lives. So a task killed
with -9 keeps its devices exactly as long as the container it left behind, and a reused process id never
counts (the process's start time is recorded too). Standard library only: no Airflow, no Docker SDK (the
container check is handed in as ``probe``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clara_airflow.durable import write_file
from clara_airflow.errors import ClaraAirflowError, ServiceError

__all__ = ["GpuPool", "GpuWaitTimeout", "Holder", "detect", "process_alive", "start_time"]

POLL = 2.0  # seconds between two looks at the holders while waiting (the bound: at most 5)
ENDED = ("exited", "dead", "removing")  # a container in one of these holds nothing any more
Probe = Callable[[str], "str | None"]  # container name -> its state ("running", ...), None: no such container


class GpuWaitTimeout(ServiceError):
    """The devices stayed held for longer than the step may wait: a retry may find them free."""


@dataclass(frozen=True)
class Holder:
    """Who holds devices: a step try (dag, run, task) or a service (``service``), through ``container``."""

    container: str
    pid: int = 0  # the process that took the devices; 0 once it has handed them to the container alone
    started: int = 0  # that process's start time (/proc/<pid>/stat), so that a reused pid is not it
    since: float = 0.0
    dag_id: str = ""
    run_id: str = ""
    task_id: str = ""
    service: str = ""

    def describe(self) -> str:
        if self.service:
            return f"service {self.service} (container {self.container})"
        return f"{self.dag_id} / {self.run_id} / {self.task_id} (container {self.container})"


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot; 0 when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, started: int) -> bool:
    return pid > 0 and start_time(pid) == started != 0


class GpuPool:
    """The devices ``devices`` of this host (indices or UUIDs, as the engine names them)."""

    def __init__(self, devices: Sequence[str], state_dir: str | Path, probe: Probe) -> None:
        self.devices = tuple(devices)
        self.state = Path(state_dir)
        self.probe = probe

    # -- the record, under the lock ----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Holder]]:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                held = self._read()
                before = dict(held)
                yield held
                if held != before:
                    write_file(self.state / "holders.json", json.dumps(
                        {device: asdict(h) for device, h in sorted(held.items())}, indent=1))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Holder]:
        try:
            raw = json.loads((self.state / "holders.json").read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:  # never guess who holds what: a damaged record is a clear error
            raise ClaraAirflowError(f"{self.state / 'holders.json'} is not valid JSON ({exc}); remove it once no "
                                    "GPU step or service runs on this host") from None
        return {device: Holder(**fields) for device, fields in raw.items()}

    def alive(self, holder: Holder) -> bool:
        """Holds while its container has not ended; before the container exists, while its process lives.
        When the engine cannot be asked, the holder is kept (never hand out a device that may be in use)."""
        try:
            state = self.probe(holder.container)
        except Exception:
            return True
        if state is not None:
            return state not in ENDED
        return process_alive(holder.pid, holder.started)

    def _sweep(self, held: dict[str, Holder]) -> None:
        for device, holder in list(held.items()):
            if device not in self.devices or not self.alive(holder):
                del held[device]

    # -- what tasks and services call ---------------------------------------------------------------
    def take(self, count: int, holder: Holder, *, wait: float, log: Any = None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[str]:
        """``count`` devices no live holder has, recorded for ``holder``; waits (looking every :data:`POLL`
        seconds) up to ``wait`` seconds while too few are free. A holder that already has devices (a retry
        of the same container) gets them back.

        :raises ClaraAirflowError: ``count`` is larger than the inventory.
        :raises GpuWaitTimeout: still too few free after ``wait`` seconds; says who holds them.
        """
        if count > len(self.devices):
            raise ClaraAirflowError(f"requests.gpu is {count}, but this Docker host has {len(self.devices)} GPU(s) "
                                    f"([clara] gpus = {','.join(self.devices) or 'none'}); lower requests.gpu or run it "
                                    "on a host with more GPUs")
        deadline, said = clock() + wait, ""
        while True:
            with self._locked() as held:
                self._sweep(held)
                mine = [d for d, h in held.items() if h.container == holder.container]
                free = [d for d in self.devices if d not in held]
                if len(mine) == count or len(mine) + len(free) >= count:
                    chosen = (mine + free)[:count]
                    for device in chosen:
                        held[device] = holder
                    return chosen
                busy = "; ".join(f"GPU {d}: {h.describe()}" for d, h in held.items())
            left = deadline - clock()
            if left <= 0:
                raise GpuWaitTimeout(f"{count} GPU(s) requested, {len(free)} of {len(self.devices)} free after waiting "
                                     f"{wait:.0f} s; held by: {busy}. Raise x-airflow.gpu_wait, or stop what holds "
                                     "them (clara-airflow gpus lists the holders)")
            if log is not None and busy != said:
                log.info("waiting for %d GPU(s): %d of %d free; held by: %s", count, len(free), len(self.devices), busy)
                said = busy
            sleep(min(POLL, left))

    def hand_over(self, container: str) -> None:
        """The container exists: from now on it alone keeps the devices (the process may end, a service's
        ensure task does)."""
        with self._locked() as held:
            for device, holder in list(held.items()):
                if holder.container == container:
                    held[device] = Holder(**{**asdict(holder), "pid": 0, "started": 0})

    def release(self, container: str) -> None:
        """The devices of ``container`` are free once it has ended; while it still runs (a step whose
        container outlived an error), it keeps them, as its record shows."""
        self.hand_over(container)
        with self._locked() as held:
            self._sweep(held)

    def holders(self) -> dict[str, Holder | None]:
        """Every device with its live holder (None: free)."""
        with self._locked() as held:
            self._sweep(held)
            return {device: held.get(device) for device in self.devices}


def detect() -> tuple[str, ...]:
    """Every GPU NVML sees, by UUID; none when ``nvidia-ml-py`` or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
            found.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return tuple(found)
    finally:
        pynvml.nvmlShutdown()
