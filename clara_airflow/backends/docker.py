"""Docker backend: the shared service containers (detached docker-py containers). Step containers are
decided in ``docker_steps.py`` and run by ``clara_airflow.operators.docker_step``.

The container *name* ``clara-svc-<id>`` is the start lock: of racing creates exactly one succeeds and
the others get HTTP 409 and reuse the winner's container (AIRFLOW-NOTES section 6).
"""

from __future__ import annotations

import contextlib
import os
import time
from functools import cached_property
from typing import Any

from clara_airflow.backends.base import (
    DATA_PATH_VAR,
    LABEL_DEPLOYMENT,
    LABEL_ID,
    LABEL_MANAGED,
    Managed,
    ServiceInstance,
    StepContainer,
    foreign_error,
    foreign_owner,
)
from clara_airflow.backends.docker_engine import accepts as _accepts
from clara_airflow.backends.docker_engine import created_epoch as _created_epoch
from clara_airflow.backends.docker_engine import docker_client, ensure_network, missing_model, model_ready, pull_image
from clara_airflow.backends.docker_gpus import LABEL_GPUS, service_gpus
from clara_airflow.backends.docker_steps import LABEL_DAG, LABEL_RUN_ID, LABEL_STEP
from clara_airflow.compiler.identity import service_name, volume_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.errors import ServiceError
from clara_airflow.settings import Options
from clara_airflow.spec.template import expand_references


class DockerBackend:
    """The Docker engine: hands out the service manager (step tasks are built in clara_airflow.operators)."""

    name = "docker"

    def __init__(self, options: Options) -> None:
        self.options = options

    def service_manager(self) -> DockerServiceManager:
        return DockerServiceManager(self.options)


class DockerServiceManager:
    """Finds or starts shared service containers and waits until they are ready."""

    POLL = 0.1

    def __init__(self, options: Options) -> None:
        self.url = options.deployment.docker_url
        self.network = options.deployment.network
        self.data_dir = options.pipeline.services.data_dir
        self.deployment = options.deployment.deployment_id
        self.settings = options.deployment

    @cached_property
    def cli(self) -> Any:
        return docker_client(self.url)

    # -- find or start --------------------------------------------------------------------------------
    def ensure(self, svc: ServicePlan, *, timeout: float, log: Any, sole_user: Any = None) -> ServiceInstance:
        """The running instance of ``svc``, started if needed, once every port is ready (``sole_user``: unused)."""
        deadline = time.monotonic() + timeout
        name = service_name(svc.id)
        ensure_network(self.cli, self.network)
        created = False
        while True:
            info = self._inspect(name)
            if info is None:
                created = self._create(svc, log, deadline - time.monotonic()) or created
                continue
            owner = foreign_owner((info.get("Config") or {}).get("Labels"), self.deployment)
            if owner is not None:
                raise ServiceError(foreign_error("container", name, owner))
            if self._settle(info, created, log):
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"service {name} ({svc.image}:{svc.tag}) is stuck in state "
                                   f"'{info['State']['Status']}'", logs=self.logs(svc.id))
            time.sleep(self.POLL)
        self._check_config(svc, info, log)
        if self.network not in info["NetworkSettings"]["Networks"]:
            info = self._join_network(info, log)
        address = info["NetworkSettings"]["Networks"].get(self.network, {}).get("IPAddress") or name
        self._wait_ready(svc, address, deadline)
        gpus = ((info.get("Config") or {}).get("Labels") or {}).get(LABEL_GPUS, "")
        return ServiceInstance(sid=svc.id, host=name, created=created, ref=info["Id"],
                               started_at=info["State"].get("StartedAt", ""), devices=tuple(filter(None, gpus.split(","))),
                               volumes={p: volume_name(svc.id, p) for _, p in svc.volumes})

    def _join_network(self, info: dict[str, Any], log: Any) -> dict[str, Any]:
        """A running instance found outside this deployment's network is attached to it."""
        from docker.errors import APIError

        log.info("attaching service %s to the network %s", info["Name"].lstrip("/"), self.network)
        try:
            self.cli.connect_container_to_network(info["Id"], self.network)
        except APIError as exc:
            if exc.status_code not in (403, 409):  # already attached (a concurrent ensure did it)
                raise
        return dict(self.cli.inspect_container(info["Id"]))

    def _inspect(self, name: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            info: dict[str, Any] = self.cli.inspect_container(name)
            return info
        except NotFound:
            return None

    def _settle(self, info: dict[str, Any], created: bool, log: Any) -> bool:
        """Move a found container towards running; True once it runs."""
        from docker.errors import APIError

        state = info["State"]
        status = state["Status"]
        if status == "running":
            return True
        age = time.time() - _created_epoch(info)
        try:
            if status == "created" and (created or age > 5):
                self.cli.start(info["Id"])  # the creator died between create and start
            elif status == "paused":
                self.cli.unpause(info["Id"])
            elif status in ("exited", "dead"):
                log.warning("service container %s is %s (exit code %s); replacing it", info["Name"].lstrip("/"),
                            status, state.get("ExitCode"))
                self.cli.remove_container(info["Id"], force=True)
        except APIError as exc:
            if exc.status_code not in (304, 404, 409):
                raise
        return False

    def _create(self, svc: ServicePlan, log: Any, wait: float) -> bool:
        """Create and start ``clara-svc-<id>``; False when another task won the race (HTTP 409)."""
        from docker.errors import APIError, ImageNotFound
        from docker.types import Mount

        gpus = service_gpus(self.settings, self.cli, service_name(svc.id), svc.id, svc.requests.gpu,
                            wait=max(wait, 0), log=log)
        env = {**dict(svc.variables), DATA_PATH_VAR: self.data_dir, **gpus.env}
        os.makedirs(self.data_dir, exist_ok=True)
        mounts = [Mount(target=self.data_dir, source=self.data_dir, type="bind")]
        mounts += [Mount(target=path, source=volume_name(svc.id, path), type="volume") for _, path in svc.volumes]
        mounts += [Mount(target=c, source=h, type="bind", read_only=True) for h, c in svc.host_mounts]
        host_config = self.cli.create_host_config(
            network_mode=self.network, mounts=mounts, nano_cpus=svc.requests.cpu * 10**9,
            mem_limit=f"{svc.requests.memory}m", device_requests=gpus.requests,
            security_opt=["no-new-privileges"], init=True,
        )
        image = f"{svc.image}:{svc.tag}"
        kwargs = dict(image=image, name=service_name(svc.id), environment=env, host_config=host_config,
                      command=[expand_references(c, env) for c in svc.command] or None, detach=True,
                      labels={LABEL_ID: svc.id, LABEL_MANAGED: "true", "clara-airflow/image": image, **gpus.labels,
                              **({LABEL_DEPLOYMENT: self.deployment} if self.deployment else {})})
        try:
            try:
                container = self.cli.create_container(**kwargs)
            except ImageNotFound:
                pull_image(self.cli, image, log)
                container = self.cli.create_container(**kwargs)
        except APIError as exc:
            if exc.status_code == 409:
                log.info("service %s is being started by another task; waiting for it", service_name(svc.id))
                return False
            gpus.release()
            raise ServiceError(f"cannot create service {service_name(svc.id)} ({image}): {exc.explanation}") from None
        gpus.hand_over()
        log.info("starting service %s from %s", service_name(svc.id), image)
        try:
            self.cli.start(container["Id"])
        except APIError as exc:
            self.cli.remove_container(container["Id"], force=True)
            gpus.release()
            hint = (" (the Docker engine has no GPU runtime; install nvidia-container-toolkit or lower "
                    "requests.gpu)") if "device driver" in str(exc.explanation) else ""
            raise ServiceError(f"cannot start service {service_name(svc.id)} ({image}): "
                               f"{exc.explanation}{hint}") from None
        return True

    def _check_config(self, svc: ServicePlan, info: dict[str, Any], log: Any) -> None:
        """Section 7.4: a running instance keeps its start configuration."""
        mounted = {m.get("Destination") for m in info.get("Mounts", [])}
        missing = [p for _, p in svc.volumes if p not in mounted]
        if missing:
            raise ServiceError(f"service {service_name(svc.id)} is running without the volume(s) "
                               f"{', '.join(missing)} this pipeline declares; stop it with "
                               f"'clara-airflow services stop {svc.id}' so the next run starts it with them")
        host = info.get("HostConfig", {})
        if (host.get("Memory") or 0) and host["Memory"] < svc.requests.memory * 2**20:
            log.warning("service %s runs with %s MiB of memory; this pipeline asks for %s MiB",
                        service_name(svc.id), host["Memory"] // 2**20, svc.requests.memory)

    # -- readiness --------------------------------------------------------------------------------------
    def _wait_ready(self, svc: ServicePlan, address: str, deadline: float) -> None:
        ports = svc.ports
        pending = list(ports)
        delay = 0.01  # a server that is up in 30 ms is not kept waiting for a full POLL
        while pending:
            if _accepts(address, pending[0]):
                pending.pop(0)
                continue
            self._fail_if_down(svc)
            if time.monotonic() > deadline:
                raise ServiceError(f"service {service_name(svc.id)} ({svc.image}:{svc.tag}) did not accept "
                                   f"connections on port {pending[0]} in time (services.start_timeout)",
                                   logs=self.logs(svc.id))
            time.sleep(delay)
            delay = min(delay * 2, self.POLL)
        for model in svc.models:
            self._wait_model(svc, address, model, deadline)

    def _fail_if_down(self, svc: ServicePlan) -> None:
        info = self._inspect(service_name(svc.id))
        if info is None or info["State"]["Status"] != "running":
            state = "removed" if info is None else f"{info['State']['Status']} (exit code {info['State'].get('ExitCode')})"
            raise ServiceError(f"service {service_name(svc.id)} ({svc.image}:{svc.tag}) stopped while starting: "
                               f"{state}", logs=self.logs(svc.id))

    def _wait_model(self, svc: ServicePlan, address: str, model: str, deadline: float) -> None:
        missing = missing_model(svc.host_mounts, model)
        if missing:
            raise ServiceError(missing)
        while not model_ready(address, model):
            self._fail_if_down(svc)
            if time.monotonic() > deadline:
                raise ServiceError(f"model '{model}' did not become ready on {service_name(svc.id)}",
                                   logs=self.logs(svc.id))
            time.sleep(self.POLL * 5)

    # -- administration ---------------------------------------------------------------------------------
    def status(self, sid: str) -> str:
        info = self._inspect(service_name(sid))
        return "missing" if info is None else str(info["State"]["Status"])

    def stop(self, sid: str) -> bool:
        from docker.errors import NotFound

        info = self._inspect(service_name(sid))
        owner = foreign_owner((info.get("Config") or {}).get("Labels") if info else None, self.deployment)
        if owner is not None:
            raise ServiceError(foreign_error("container", service_name(sid), owner))
        try:
            self.cli.remove_container(service_name(sid), force=True)
            return True
        except NotFound:
            return False

    def remove_volumes(self, sid: str) -> list[str]:
        """Remove the named volumes of the service's volume connections (``clara-svc-<id>-<hash>``)."""
        from docker.errors import APIError, NotFound

        prefix = service_name(sid) + "-"
        names = sorted(v["Name"] for v in (self.cli.volumes(filters={"name": prefix}) or {}).get("Volumes") or []
                       if v["Name"].startswith(prefix))
        for name in names:
            try:
                self.cli.remove_volume(name)
            except NotFound:
                pass
            except APIError as exc:
                raise ServiceError(f"cannot remove volume {name} of {service_name(sid)}: {exc.explanation}") from None
        return names

    def logs(self, sid: str, lines: int = 50) -> str:
        from docker.errors import APIError

        try:
            raw: bytes = self.cli.logs(service_name(sid), tail=lines)
            return raw.decode("utf-8", "replace").rstrip()
        except APIError:
            return ""

    def list_managed(self) -> dict[str, Managed]:
        """Every service container carrying the clara-airflow label: id -> state and age."""
        found = self.cli.containers(all=True, filters={"label": LABEL_ID})
        return {c["Labels"][LABEL_ID]: Managed(c["State"], time.time() - float(c.get("Created") or 0),
                                               c["Labels"].get(LABEL_DEPLOYMENT, "")) for c in found}

    def list_steps(self) -> list[StepContainer]:
        """Every step container (any state), with the DAG run it belongs to."""
        found = self.cli.containers(all=True, filters={"label": LABEL_STEP})
        return [StepContainer(ref=c["Id"], name=(c.get("Names") or ["?"])[0].lstrip("/"),
                              dag_id=c["Labels"].get(LABEL_DAG, ""), run_id=c["Labels"].get(LABEL_RUN_ID, ""),
                              state=c["State"], age=time.time() - float(c.get("Created") or 0),
                              deployment=c["Labels"].get(LABEL_DEPLOYMENT, "")) for c in found]

    def remove_step(self, ref: str) -> None:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            self.cli.remove_container(ref, force=True)
