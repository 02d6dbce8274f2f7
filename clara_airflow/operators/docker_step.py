"""ClaraDockerOperator: one Clara operator as the docker provider's DockerOperator.

Imported only when a Docker step task is built, so parsing stays free of the provider until needed.
Nothing here is rendered by Jinja: pipeline text is used verbatim, parameters are substituted by the
compiler's own rules and ``$(NAME)`` is expanded as Kubernetes would.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator  # noqa: TID253 - module is imported lazily

from clara_airflow.airflow_compat import AirflowException, QuotaClient
from clara_airflow.backends.base import ContainerRun
from clara_airflow.backends.docker import DockerServiceManager
from clara_airflow.backends.docker_engine import engine_down, ensure_network
from clara_airflow.backends.docker_gpus import container_gpus, gpu_pool, holder
from clara_airflow.backends.docker_steps import docker_run
from clara_airflow.backends.layout import claim_run_folder, hand_over, reset_step_folder, step_user
from clara_airflow.batch.run import branch_study, study_folder
from clara_airflow.compiler.identity import service_name
from clara_airflow.compiler.plan import ServicePlan, StepPlan
from clara_airflow.compiler.resolve import resolve_service
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.failures import task_error
from clara_airflow.operators.step_inputs import run_inputs
from clara_airflow.services.ensure import RunRef, ensure_service
from clara_airflow.services.heartbeat import ServiceHeartbeat
from clara_airflow.services.identity import identified
from clara_airflow.settings import Options


class ClaraDockerOperator(DockerOperator):
    """Runs one Clara operator in a container.

    :param step: the compiled StepPlan.
    :param parameters: the pipeline's (name, default) parameter pairs.
    :param services: compile-time service id -> ServicePlan of the services this step declares.
    :param options: the pipeline's settings (output root, parameter rules, the services' data folder,
        start timeout and idle TTL, so a service this step has to start again is started exactly as its
        ensure task would) and the deployment's (Docker URL, network, payload root, step user, heartbeat).
    """

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()
    ui_color = "#c8e6a0"

    def __init__(self, *, step: StepPlan, parameters: list[list[str]], services: Mapping[str, ServicePlan],
                 options: Options, study: Any = None, **kwargs: Any) -> None:
        plan = step
        kwargs.setdefault("auto_remove", "force")
        super().__init__(
            image=f"{plan.image}:{plan.tag}", command=list(plan.command) or None,
            network_mode=options.deployment.network, docker_url=options.deployment.docker_url,
            mount_tmp_dir=False, cpus=float(plan.requests.cpu), mem_limit=f"{plan.requests.memory}m",
            privileged=False, do_xcom_push=False, **kwargs,
        )
        self.step = plan
        self.parameters = parameters
        self.services = dict(services)
        self.options = options
        self.service_ids: tuple[str, ...] = ()
        self.study = study  # batch mode: this branch's study (a mapped task group argument)

    @property
    def cli(self) -> Any:
        return QuotaClient(self.hook.api_client, int(self.step.requests.cpu * 10**9))

    def execute(self, context: Any) -> Any:
        self.options = identified(self.options)  # its containers carry the deployment's identity
        study = branch_study(self.study, context)
        try:
            self._prepare(context, study.get("study", ""))
        except ClaraAirflowError as exc:
            raise task_error(exc, f"operator '{self.task_id}'") from None
        except AirflowException as exc:  # the provider's hook: an unreachable engine
            raise AirflowException(f"operator '{self.task_id}': {self._advice(str(exc))}") from None
        self.log.info("running %s %s", self.image, self.command or "(image default command)")
        try:
            with ServiceHeartbeat(self.service_ids, self.options.deployment.service_heartbeat, self.log,
                                  dag_id=context["dag"].dag_id), self._devices(context):
                return super().execute(context)
        except ClaraAirflowError as exc:  # no GPU came free in time, or more are asked than the host has
            raise task_error(exc, f"operator '{self.task_id}'") from None
        except Exception as exc:
            raise AirflowException(self._failure_text(exc) + self._lost_services()) from exc

    def _prepare(self, context: Any, study: str) -> None:
        settings, deployment = self.options.pipeline, self.options.deployment
        output_root = settings.payload.output_root
        inbox = settings.batch.inbox or ""
        inputs = run_inputs(context, self.step, self.parameters, self.services, payload_root=deployment.payload_root,
                            local=True, reserved=(output_root, settings.services.data_dir), rules=settings.parameters,
                            study=(os.path.join(inbox, study), inbox) if study else None)
        step, env, payload = inputs.step, inputs.env, inputs.payload
        self._recheck_services(inputs.values, RunRef(context["dag"].dag_id, context["run_id"]))
        self.service_ids = inputs.service_ids
        run_dir = claim_run_folder(output_root, context["dag"].dag_id, context["run_id"])
        if study:
            run_dir = study_folder(run_dir, study)
            run_dir.mkdir(exist_ok=True)
        user = step_user(deployment.step_user)
        own = reset_step_folder(run_dir, step.name, [m.sub for m in step.mounts if m.kind == "output"])
        try:
            hand_over(own, user)
        except PermissionError:
            raise ClaraAirflowError(f"cannot give {own} to user {user} ([clara] step_user); run the worker "
                                    "as root or set step_user = worker") from None
        self._apply(docker_run(step, env, payload, run_dir, dag_id=context["dag"].dag_id, run_id=context["run_id"],
                               try_number=getattr(context["ti"], "try_number", 1), user=user,
                               study=study, deployment=deployment.deployment_id))
        ensure_network(self.hook.api_client, deployment.network)

    @contextlib.contextmanager
    def _devices(self, context: Any) -> Iterator[None]:
        """The step's own GPUs of this host for as long as its container runs (``[clara] gpus``)."""
        deployment, count, name = self.options.deployment, self.step.requests.gpu, str(self.container_name)
        pool = gpu_pool(deployment, self.hook.api_client) if count and deployment.gpus else None
        devices: list[str] | None = [] if deployment.gpus else None
        if pool is not None:
            wait = self.options.pipeline.gpu_wait
            devices = pool.take(count, holder(name, dag_id=context["dag"].dag_id,
                                              run_id=context["run_id"], task_id=self.task_id),
                                wait=self.options.pipeline.timeout if wait is None else wait, log=self.log)
            self.log.info("GPU(s) %s of this host are this step's until its container %s ends", ",".join(devices),
                          name)
        self.device_requests, env, labels = container_gpus(deployment, devices, count)
        self.environment = {**dict(self.environment), **env}  # type: ignore[arg-type]  # _apply made it a dict
        self.labels = {**dict(self.labels or {}), **labels}  # type: ignore[arg-type]
        try:
            yield
        finally:
            if pool is not None:
                pool.release(name)

    def _apply(self, run: ContainerRun) -> None:
        from docker.types import Mount

        self.image, self.command, self.environment = run.image, list(run.command) or None, run.env
        self.mounts = [Mount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only) for m in run.mounts]
        self.container_name, self.labels, self.user = run.name, run.labels, run.user

    def _recheck_services(self, values: dict[str, str], run: RunRef) -> None:
        """Just before the step starts: a service that vanished since its ensure task is started again,
        through the same code and settings as the ensure task, and recorded."""
        if not self.services:
            return
        manager = DockerServiceManager(self.options)
        settings = self.options.pipeline
        for plan in self.services.values():
            svc = resolve_service(plan, values, settings.parameters)
            if manager.status(svc.id) != "running":
                self.log.warning("service clara-svc-%s is not running any more; starting it again", svc.id)
                ensure_service(svc, manager, run, backend="docker",
                               location={"network": self.options.deployment.network,
                                         "deployment": self.options.deployment.deployment_id or ""},
                               idle_ttl=settings.services.idle_ttl, start_timeout=settings.services.start_timeout,
                               log=self.log)

    def _lost_services(self) -> str:
        """A step that failed while one of its services was gone says so: the failure is retryable."""
        if not self.service_ids:
            return ""
        try:
            manager = DockerServiceManager(self.options)
            gone = {sid: state for sid in self.service_ids if (state := manager.status(sid)) != "running"}
        except Exception:
            return ""
        return "".join(f"\nservice {service_name(sid)} is {state}: it stopped while this step ran. The task can be "
                       "retried (x-airflow.retries); its next try starts the service again." for sid, state in gone.items())

    def _failure_text(self, exc: Exception) -> str:
        logs = getattr(exc, "logs", None) or []
        tail = "\n".join(str(line) for line in list(logs)[-20:])
        text = self._advice(str(exc))
        detail = f"\n--- last container output ---\n{tail}" if tail else ""
        return f"operator '{self.task_id}' ({self.image}) failed: {text}{detail}"

    def _advice(self, text: str) -> str:
        """A Docker error with what to do about it, where the error is a known one."""
        if "establish connection" in text:
            return engine_down(self.docker_url, text)
        if "images/create" in text:  # the provider pulls a missing image, and the pull failed
            return text + (f"\nThe image {self.image} is not on the Docker engine and could not be pulled; build "
                           "or load it there (docker/build.sh builds the demo images) or log the engine in to its "
                           "registry.")
        if "is already in use by container" in text:  # names carry deployment, run, step and try: a leftover
            name = self.container_name
            return text + (f"\nA container named {name} is left from an earlier start of this same try (a worker "
                           "that died, or a metadata database made anew under the same [clara] deployment_id). "
                           f"Look at it (docker inspect {name}); once it is not needed, remove it (docker rm -f "
                           f"{name}) and clear this task.")
        if "device driver" in text:
            return text + ("\nThis operator requests GPUs but the Docker engine has no GPU runtime; install "
                           "nvidia-container-toolkit or lower requests.gpu.")
        return text
