"""Pure builders of Kubernetes step pods: what one step try runs, decided as data (no cluster, no
Airflow). The operator only copies a :class:`PodRun` onto the provider's KubernetesPodOperator.

Clara's ``command`` becomes the container's ``args`` (the image's entrypoint stays), and ``$(NAME)``
is left for Kubernetes to expand. Payload and outputs are sub-paths of ``payload.claim`` (or node
paths without it), with the same layout as on Docker; an init container claims the run folder and
empties this step's. The kubernetes client is imported lazily.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from clara_airflow.backends.layout import RUN_MARKER, run_folder_name
from clara_airflow.compiler.plan import StepPlan

__all__ = ["PREPARE_SCRIPT", "PodRun", "label_value", "pod_name", "pod_run"]

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


@dataclass(frozen=True)
class PodRun:
    """What one step pod runs (kubernetes client model objects for volumes and containers)."""

    image: str
    args: list[str]
    env: list[Any]
    volumes: list[Any]
    volume_mounts: list[Any]
    init_containers: list[Any]
    labels: dict[str, str]


def label_value(text: str) -> str:
    """A valid label value (63 characters of ``A-Za-z0-9_.-``); long or odd text keeps a hash suffix."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_.-")
    if clean == text and len(text) <= 63:
        return text
    return f"{clean[:50].strip('_.-')}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def pod_name(step_name: str) -> str:
    """The pod name prefix of a step (the provider appends a random suffix)."""
    return re.sub(r"[^a-z0-9-]", "-", f"clara-{step_name}".lower())[:50].strip("-")


def pod_run(step: StepPlan, env: dict[str, str], payload: str, *, dag_id: str, run_id: str, claim: str | None,
            output_root: str, init_image: str, owner: str) -> PodRun:
    """The pod of one step try.

    :param step: the step with the run's parameters substituted. :param env: its full environment.
    :param payload: the checked input payload (a path inside the claim, or a node path without one).
    :param owner: ``UID:GID`` the init container gives the step's output folder to, or ``""``.
    """
    from kubernetes.client import models as k8s

    run_dir = f"{dag_id}/{run_folder_name(run_id)}"
    volumes, mounts = _storage(step, payload, run_dir, claim, output_root)
    return PodRun(
        image=f"{step.image}:{step.tag}", args=list(step.command),
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()], volumes=volumes, volume_mounts=mounts,
        init_containers=[_prepare_container(step, run_id, run_dir, claim, output_root, init_image, owner)],
        labels={"clara-airflow/dag-id": label_value(dag_id), "clara-airflow/operator": label_value(step.name),
                "clara-airflow/run": label_value(run_folder_name(run_id))})


def _storage(step: StepPlan, payload: str, run_dir: str, claim: str | None,
             output_root: str) -> tuple[list[Any], list[Any]]:
    from kubernetes.client import models as k8s

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


def _prepare_container(step: StepPlan, run_id: str, run_dir: str, claim: str | None, output_root: str,
                       init_image: str, owner: str) -> Any:
    from kubernetes.client import models as k8s

    volume = PAYLOAD_VOLUME if claim else OUTPUT_VOLUME
    sub = output_root.strip("/") if claim else None
    subs = " ".join(m.sub for m in step.mounts if m.kind == "output" and m.sub)
    env = {"CLARA_ROOT": WORK_DIR, "CLARA_RUN_DIR": run_dir, "CLARA_RUN_ID": run_id, "CLARA_STEP": step.name,
           "CLARA_SUBS": subs, **({"CLARA_OWNER": owner} if owner else {})}
    return k8s.V1Container(
        name="clara-prepare-output", image=init_image,
        command=["/bin/sh", "-c", PREPARE_SCRIPT], env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        volume_mounts=[k8s.V1VolumeMount(name=volume, mount_path=WORK_DIR, sub_path=sub)],
        resources=k8s.V1ResourceRequirements(requests={"cpu": "100m", "memory": "32Mi"},
                                             limits={"cpu": "100m", "memory": "32Mi"}),
        security_context=k8s.V1SecurityContext(allow_privilege_escalation=False, privileged=False))
