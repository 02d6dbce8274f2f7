"""ClaraKubernetesPodOperator: one Clara operator as the cncf-kubernetes provider's KubernetesPodOperator.

Imported only when a Kubernetes step task is built. Clara's ``command`` becomes the container's
``args`` (the image's entrypoint stays), and ``$(NAME)`` is left for Kubernetes to expand. Nothing is
rendered by Jinja. Payload and outputs are sub-paths of ``payload.claim`` (or node paths without it),
with the same layout as on Docker; an init container claims the run folder and empties this step's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import (  # noqa: TID253 - module is imported lazily
    KubernetesPodOperator,
)
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s  # noqa: TID253 - module is imported lazily

from clara_airflow.airflow_compat import kpo_log_tail
from clara_airflow.backends.kubernetes_pods import hook_kwargs, resources, scheduling
from clara_airflow.backends.layout import RUN_MARKER, run_folder_name, step_user
from clara_airflow.compiler.plan import ServicePlan, StepPlan
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.step_inputs import run_inputs
from clara_airflow.services.heartbeat import ServiceHeartbeat
from clara_airflow.settings import Options

OUTPUT_VOLUME, PAYLOAD_VOLUME, WORK_DIR = "clara-output", "clara-payload", "/clara-output"
# The init container's script is constant: run id, folder and step reach it only as environment values.
PREPARE_SCRIPT = (
    'set -eu; d="$CLARA_ROOT/$CLARA_RUN_DIR"; mkdir -p "$d"; '
    'if ! (set -C; printf "%s" "$CLARA_RUN_ID" > "$d/' + RUN_MARKER + '") 2>/dev/null; then '
    'owner=$(cat "$d/' + RUN_MARKER + '"); if [ "$owner" != "$CLARA_RUN_ID" ]; then '
    'echo "output folder $d belongs to run $owner, not $CLARA_RUN_ID; refusing to overwrite it" >&2; exit 1; fi; fi; '
    'rm -rf "$d/$CLARA_STEP"; mkdir -p "$d/$CLARA_STEP"; for s in $CLARA_SUBS; do mkdir -p "$d/$CLARA_STEP/$s"; done; '
    'if [ -n "${CLARA_OWNER:-}" ]; then chown -R "$CLARA_OWNER" "$d/$CLARA_STEP"; fi'
)


def label_value(text: str) -> str:
    """A valid label value (63 characters of ``A-Za-z0-9_.-``); long or odd text keeps a hash suffix."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_.-")
    if clean == text and len(text) <= 63:
        return text
    return f"{clean[:50].strip('_.-')}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


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
        user = step_user(deployment.step_user, local=False)
        super().__init__(
            name=re.sub(r"[^a-z0-9-]", "-", f"clara-{plan.name}".lower())[:50].strip("-"),
            namespace=options.pipeline.namespace, image=f"{plan.image}:{plan.tag}", cmds=None,
            arguments=list(plan.command) or None, container_resources=resources(plan.requests),
            image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in pull_secrets] or None,
            node_selector=selector, tolerations=tolerations,
            service_account_name=deployment.service_account,
            on_finish_action="delete_succeeded_pod" if deployment.keep_failed_pods else "delete_pod",
            get_logs=True, do_xcom_push=False, log_events_on_failure=True,
            kubernetes_conn_id=connection["conn_id"], config_file=connection["config_file"],
            in_cluster=connection["in_cluster"],
            container_security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False, privileged=False,
                run_as_user=user[0] if user else None, run_as_group=user[1] if user else None),
            **kwargs,
        )
        self.step = plan
        self.parameters = parameters
        self.services = {sid: svc for sid, svc in services.items()}
        self.options = options
        self.owner = f"{user[0]}:{user[1]}" if user else ""
        self.service_ids: tuple[str, ...] = ()

    def execute(self, context: Any) -> Any:
        try:
            self.prepare(context)
        except ClaraAirflowError as exc:
            raise AirflowException(f"operator '{self.task_id}': {exc}") from None
        try:
            with ServiceHeartbeat(self.service_ids, self.options.deployment.service_heartbeat, self.log,
                                  dag_id=context["dag"].dag_id):
                return super().execute(context)
        except Exception as exc:
            raise AirflowException(f"operator '{self.task_id}' ({self.image}) failed: {exc}{self._tail()}") from exc

    def prepare(self, context: Any) -> None:
        """Fill in what depends on the run: image, args, env, volumes, init container, labels."""
        settings = self.options.pipeline
        inputs = run_inputs(context, self.step, self.parameters, self.services,
                            payload_root=self.options.deployment.payload_root, local=False,
                            reserved=(settings.payload.output_root, settings.services.data_dir),
                            rules=settings.parameters)
        step, env, payload = inputs.step, inputs.env, inputs.payload
        self.service_ids = inputs.service_ids
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        run_dir = f"{dag_id}/{run_folder_name(run_id)}"
        self.image = f"{step.image}:{step.tag}"
        self.arguments = list(step.command)
        self.env_vars = [k8s.V1EnvVar(name=k, value=v) for k, v in env.items()]
        self.volumes, self.volume_mounts = self._storage(step, payload, run_dir)
        self.init_containers = [self._prepare_container(step, run_id, run_dir)]
        self.labels = {"clara-airflow/dag-id": label_value(dag_id), "clara-airflow/operator": label_value(step.name),
                       "clara-airflow/run": label_value(run_folder_name(run_id))}

    def _roots(self) -> tuple[str | None, str]:
        payload = self.options.pipeline.payload
        return payload.claim, payload.output_root

    def _storage(self, step: StepPlan, payload: str, run_dir: str) -> tuple[list[Any], list[Any]]:
        claim, output_root = self._roots()
        if claim:
            volumes = [k8s.V1Volume(name=PAYLOAD_VOLUME, persistent_volume_claim=(
                k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim)))]
            payload_volume, payload_sub, output_volume = PAYLOAD_VOLUME, payload.strip("/"), PAYLOAD_VOLUME
            output_base = f"{output_root.strip('/')}/{run_dir}"
        else:
            volumes = [k8s.V1Volume(name=PAYLOAD_VOLUME, host_path=k8s.V1HostPathVolumeSource(path=payload,
                                                                                           type="Directory")),
                       k8s.V1Volume(name=OUTPUT_VOLUME, host_path=k8s.V1HostPathVolumeSource(
                           path=output_root, type="DirectoryOrCreate"))]
            payload_volume, payload_sub, output_volume, output_base = PAYLOAD_VOLUME, "", OUTPUT_VOLUME, run_dir
        mounts = []
        for m in step.mounts:
            if m.kind == "payload":
                mounts.append(k8s.V1VolumeMount(name=payload_volume, mount_path=m.target, sub_path=payload_sub or None,
                                                read_only=True))
            elif m.kind in ("upstream", "output"):
                sub = "/".join(x for x in (output_base, m.operator, m.sub) if x)
                mounts.append(k8s.V1VolumeMount(name=output_volume, mount_path=m.target, sub_path=sub,
                                                read_only=m.read_only))
            elif m.kind == "volume":
                volumes.append(k8s.V1Volume(name=m.volume, persistent_volume_claim=(
                    k8s.V1PersistentVolumeClaimVolumeSource(claim_name=m.volume))))
                mounts.append(k8s.V1VolumeMount(name=m.volume, mount_path=m.target))
        return volumes, mounts

    def _prepare_container(self, step: StepPlan, run_id: str, run_dir: str) -> Any:
        claim, output_root = self._roots()
        volume = PAYLOAD_VOLUME if claim else OUTPUT_VOLUME
        sub = output_root.strip("/") if claim else None
        subs = " ".join(m.sub for m in step.mounts if m.kind == "output" and m.sub)
        env = {"CLARA_ROOT": WORK_DIR, "CLARA_RUN_DIR": run_dir, "CLARA_RUN_ID": run_id, "CLARA_STEP": step.name,
               "CLARA_SUBS": subs, **({"CLARA_OWNER": self.owner} if self.owner else {})}
        return k8s.V1Container(
            name="clara-prepare-output", image=self.options.deployment.init_image,
            command=["/bin/sh", "-c", PREPARE_SCRIPT], env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
            volume_mounts=[k8s.V1VolumeMount(name=volume, mount_path=WORK_DIR, sub_path=sub)],
            resources=k8s.V1ResourceRequirements(requests={"cpu": "100m", "memory": "32Mi"},
                                                 limits={"cpu": "100m", "memory": "32Mi"}),
            security_context=k8s.V1SecurityContext(allow_privilege_escalation=False, privileged=False))

    def _tail(self) -> str:
        return kpo_log_tail(self, 20)
