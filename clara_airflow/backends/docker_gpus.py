"""GPUs for Docker containers: which devices a step or service gets (:mod:`clara_airflow.backends.gpus`)
and how they reach the container (``[clara] gpu_assignment``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clara_airflow.backends.gpus import GpuPool, Holder, detect, start_time
from clara_airflow.settings import Deployment

__all__ = ["LABEL_GPUS", "VISIBLE", "container_gpus", "gpu_pool", "holder", "inventory"]

LABEL_GPUS = "clara-airflow/gpus"  # on a container that holds devices: their ids, comma-separated
VISIBLE = "NVIDIA_VISIBLE_DEVICES"
log = logging.getLogger("clara_airflow.gpus")
_WARNED: list[str] = []


def inventory(deployment: Deployment) -> tuple[str, ...] | None:
    """This host's GPUs: ``[clara] gpus`` as listed, or found through NVML (``auto``); None when unset."""
    if not deployment.gpus:
        return None
    return detect() if deployment.gpus == ("auto",) else deployment.gpus


def gpu_pool(deployment: Deployment, cli: Any) -> GpuPool | None:
    """The host's pool, asking ``cli`` (a ``docker.APIClient``) whether a holder's container still runs."""
    devices = inventory(deployment)
    if devices is None:
        return None

    def probe(name: str) -> str | None:
        from docker.errors import NotFound

        try:
            return str(cli.inspect_container(name)["State"]["Status"])
        except NotFound:
            return None

    return GpuPool(devices, deployment.gpu_state_dir, probe)


def holder(container: str, *, dag_id: str = "", run_id: str = "", task_id: str = "", service: str = "") -> Holder:
    """This process takes devices for ``container`` (a step try's, or a service's)."""
    pid = os.getpid()
    return Holder(container=container, pid=pid, started=start_time(pid), since=time.time(), dag_id=dag_id,
                  run_id=run_id, task_id=task_id, service=service)


def container_gpus(deployment: Deployment, devices: Sequence[str] | None, count: int
                   ) -> tuple[list[Any], dict[str, str], dict[str, str]]:
    """(device requests, environment, labels) of a container that requests ``count`` GPUs and was given
    ``devices`` (None: no inventory, the engine picks as before)."""
    from docker.types import DeviceRequest

    if devices is None:
        if count > 0 and not _WARNED:
            _WARNED.append("said")
            log.warning("a container requests %d GPU(s) but [clara] gpus is not set: the NVIDIA runtime gives every "
                        "such container the same first GPU(s); list this host's GPUs in [clara] gpus (or 'auto')",
                        count)
        return ([DeviceRequest(count=count, capabilities=[["gpu"]])] if count > 0 else []), {}, {}
    labels = {LABEL_GPUS: ",".join(devices)} if devices else {}
    if deployment.gpu_assignment == "visible_devices":  # the engine's default runtime is nvidia
        return [], {VISIBLE: ",".join(devices) or "void"}, labels  # void: no GPU at all, not the image's "all"
    return ([DeviceRequest(device_ids=list(devices), capabilities=[["gpu"]])] if devices else []), {}, labels


@dataclass
class ServiceGpus:
    """A service container's devices: what the container is created with, and the hold on them."""

    pool: GpuPool | None
    container: str
    requests: list[Any]
    env: dict[str, str]
    labels: dict[str, str]

    def hand_over(self) -> None:
        if self.pool is not None:
            self.pool.hand_over(self.container)

    def release(self) -> None:
        if self.pool is not None:
            self.pool.release(self.container)


def service_gpus(deployment: Deployment, cli: Any, name: str, sid: str, count: int, *, wait: float, log: Any
                 ) -> ServiceGpus:
    """The devices of the service container ``name``, held until it is stopped (the pool's record hands
    them to the container once it exists)."""
    pool = gpu_pool(deployment, cli) if count and deployment.gpus else None
    devices: list[str] | None = [] if deployment.gpus else None
    if pool is not None:
        devices = pool.take(count, holder(name, service=sid), wait=wait, log=log)
        log.info("GPU(s) %s of this host are service %s's until it is stopped", ",".join(devices), name)
    return ServiceGpus(pool, name, *container_gpus(deployment, devices, count))


def _holders(deployment: Deployment) -> dict[str, Holder | None]:
    from clara_airflow.backends.docker_engine import docker_client

    pool = gpu_pool(deployment, docker_client(deployment.docker_url))
    return {} if pool is None else pool.holders()


def gpu_rows(deployment: Deployment) -> list[dict[str, Any]]:
    """``clara-airflow gpus --json``: each GPU of this host with its live holder (None: free)."""
    from dataclasses import asdict

    return [{"device": device, "holder": None if who is None else
             {k: v for k, v in asdict(who).items() if v not in ("", 0, {}) or k == "container"}}
            for device, who in _holders(deployment).items()]


def gpu_lines(deployment: Deployment) -> list[str]:
    """``clara-airflow gpus``: one line per GPU of this host."""
    if not deployment.gpus:
        return ["[clara] gpus is not set: GPU containers are not assigned devices (the engine gives each the "
                "first ones)"]
    return [f"GPU {device}: {'free' if who is None else who.describe()}"
            for device, who in _holders(deployment).items()]
