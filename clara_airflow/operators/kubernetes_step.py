"""ClaraKubernetesPodOperator: one Clara operator as the cncf-kubernetes provider's KubernetesPodOperator.

Imported only when a Kubernetes step task is built. A thin adapter: the pod of each try is decided by
:func:`clara_airflow.backends.kubernetes_steps.pod_run` as data, and only copied onto the operator
here. Nothing is rendered by Jinja.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import (  # noqa: TID253 - module is imported lazily
    KubernetesPodOperator,
)
from kubernetes.client import models as k8s  # noqa: TID253 - module is imported lazily

from clara_airflow.airflow_compat import AirflowException, kpo_log_tail
from clara_airflow.backends.kubernetes_pods import (
    container_security,
    hook_kwargs,
    pod_security,
    pod_user,
    resources,
    scheduling,
)
from clara_airflow.backends.kubernetes_steps import PREPARE, pod_name, pod_run
from clara_airflow.compiler.plan import ServicePlan, StepPlan
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.failures import task_error
from clara_airflow.operators.step_inputs import run_inputs
from clara_airflow.services.heartbeat import ServiceHeartbeat
from clara_airflow.settings import Options

# Seconds a step pod may take to be scheduled and started (x-airflow startup_timeout): a GPU node that
# scales up from zero and pulls a multi-GB image takes minutes, past the provider's 120 s.
CPU_STARTUP, GPU_STARTUP = 120, 600
# A step pod's activeDeadlineSeconds is the step's timeout plus this: the kubelet stops a pod whose task
# died with its worker (nothing is left to delete it), never one whose task still waits on it.
DEADLINE_MARGIN = 60


class ClaraKubernetesPodOperator(KubernetesPodOperator):
    """Runs one Clara operator as a pod.

    :param step: the compiled StepPlan.
    :param parameters: the pipeline's (name, default) parameter pairs.
    :param services: compile-time service id -> ServicePlan of the services this step declares.
    :param options: the pipeline's settings (namespace, claim, output root, ...) and the deployment's.
    :param pull_secrets: image-pull secret names of the pipeline.
    """

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()
    ui_color = "#c8dcf0"

    def __init__(self, *, step: StepPlan, parameters: list[list[str]],
                 services: Mapping[str, ServicePlan],
                 options: Options, pull_secrets: list[str], **kwargs: Any) -> None:
        plan = step
        deployment = options.deployment
        selector, tolerations = scheduling(deployment, plan.requests.gpu)
        connection = hook_kwargs(deployment)
        user = pod_user(deployment.step_user)
        startup = options.pipeline.startup_timeout or (GPU_STARTUP if plan.requests.gpu else CPU_STARTUP)
        super().__init__(
            name=pod_name(plan.name),
            namespace=options.pipeline.namespace, image=f"{plan.image}:{plan.tag}", cmds=None,
            arguments=list(plan.command) or None, container_resources=resources(plan.requests),
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in pull_secrets] or None,
            node_selector=selector, tolerations=tolerations,
            service_account_name=deployment.service_account,
            on_finish_action="delete_succeeded_pod" if deployment.keep_failed_pods else "delete_pod",
            get_logs=True, do_xcom_push=False, log_events_on_failure=True,
            kubernetes_conn_id=connection["conn_id"], config_file=connection["config_file"],
            in_cluster=connection["in_cluster"],
            security_context=pod_security(user, fs_group=not options.pipeline.payload.claim),
            container_security_context=container_security(),
            automount_service_account_token=False, termination_message_policy="FallbackToLogsOnError",
            init_container_logs=[PREPARE], startup_timeout_seconds=startup,
            schedule_timeout_seconds=options.pipeline.schedule_timeout or startup,
            deferrable=False,  # the triggerer would need the same RBAC; Clara steps are short (docs/kubernetes.md)
            active_deadline_seconds=options.pipeline.timeout + DEADLINE_MARGIN,
            **kwargs,
        )
        self.step = plan
        self.parameters = parameters
        self.services = {sid: svc for sid, svc in services.items()}
        self.options = options
        self.service_ids: tuple[str, ...] = ()

    def execute(self, context: Any) -> Any:
        try:
            self.prepare(context)
        except ClaraAirflowError as exc:
            raise task_error(exc, f"operator '{self.task_id}'") from None
        try:
            with ServiceHeartbeat(self.service_ids, self.options.deployment.service_heartbeat, self.log,
                                  dag_id=context["dag"].dag_id):
                result = super().execute(context)
        except BaseException as exc:
            # A timeout: the provider's cleanup raises in its `finally` and replaces AirflowTaskTimeout, so the
            # task runner's on_kill never runs and the pod would run on (apache/airflow#49466).
            self._stop_pod()
            if not isinstance(exc, Exception):
                raise
            if getattr(self, "_killed", False):
                raise self._stopped() from exc
            raise AirflowException(f"operator '{self.task_id}' ({self.image}) failed: {exc}{self._tail()}"
                                   f"{self._claim_events()}") from exc
        if getattr(self, "_killed", False):
            # SIGTERM: on_kill deleted the pod, the provider's cleanup returns early on _killed and execute
            # returns as if the step had succeeded (apache/airflow#73006, #71202). A killed step never did.
            raise self._stopped()
        return result

    def _stopped(self) -> AirflowException:
        return AirflowException(f"operator '{self.task_id}' was stopped (SIGTERM: its worker was shut down or the "
                                "task was marked failed) before its pod finished; its outputs are incomplete")

    def prepare(self, context: Any) -> None:
        """Fill in what depends on the run: image, args, env, volumes, init container, labels."""
        settings = self.options.pipeline
        inputs = run_inputs(context, self.step, self.parameters, self.services,
                            payload_root=self.options.deployment.payload_root, local=False,
                            reserved=(settings.payload.output_root, settings.services.data_dir),
                            rules=settings.parameters)
        self.service_ids = inputs.service_ids
        run = pod_run(inputs.step, inputs.env, inputs.payload, dag_id=context["dag"].dag_id,
                      run_id=context["run_id"], claim=settings.payload.claim,
                      output_root=settings.payload.output_root, init_image=self.options.deployment.init_image)
        self.image, self.arguments, self.env_vars = run.image, run.args, run.env
        self.volumes, self.volume_mounts, self.init_containers = run.volumes, run.volume_mounts, run.init_containers
        self.labels, self.annotations = run.labels, run.annotations

    def _stop_pod(self) -> None:
        """Delete this try's pod if it is still pending or running; a pod that ended stays as on_finish_action
        says (a failed one is kept for a look with keep_failed_pods). Drop this (and the _killed check) once
        the provider fails a killed or timed-out pod itself."""
        from kubernetes.client.exceptions import ApiException

        if self.pod is None:
            return
        name, namespace = self.pod.metadata.name, self.pod.metadata.namespace
        try:
            phase = self.client.read_namespaced_pod(name, namespace).status.phase
            if phase in ("Pending", "Running"):
                self.log.warning("deleting pod %s (%s): its task did not end normally", name, phase)
                self.client.delete_namespaced_pod(name, namespace, grace_period_seconds=30)
        except ApiException as exc:
            if exc.status != 404:
                self.log.error("cannot delete pod %s: %s %s", name, exc.status, exc.reason)

    def _claim_events(self) -> str:
        """Warnings about the claims the pod mounts (``ProvisioningFailed``: a class that lacks the access
        mode, a quota): the provider logs the pod's events, not its claims'."""
        claims = sorted({v.persistent_volume_claim.claim_name for v in self.volumes or []
                         if getattr(v, "persistent_volume_claim", None) is not None})
        lines = []
        for claim in claims:
            try:
                events = self.client.list_namespaced_event(self.namespace, field_selector=(
                    f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim}")).items
            except Exception:  # the error is about the step; its claims' events are only a hint
                continue
            lines += [f"claim {claim}: {e.reason}: {e.message}" for e in events if e.type == "Warning"][-3:]
        return ("\n--- warnings about its claims ---\n" + "\n".join(lines)) if lines else ""

    def _tail(self) -> str:
        return kpo_log_tail(self, 20)
