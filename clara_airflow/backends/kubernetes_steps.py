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

from clara_airflow.backends.kubernetes_pods import container_security
from clara_airflow.backends.layout import RUN_MARKER, run_folder_name
from clara_airflow.compiler.plan import StepPlan

_LABEL = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?")

__all__ = ["PREPARE", "PREPARE_SCRIPT", "PodRun", "label_value", "pod_name", "pod_run"]

OUTPUT_VOLUME, PAYLOAD_VOLUME, WORK_DIR = "clara-output", "clara-payload", "/clara-output"
# The init container's script is constant: run id, folders and step reach it only as environment values.
# It runs as the step's own (non-root) user: group-writable folders (umask 002, the pod's fsGroup) instead
# of a chown. The run marker is claimed atomically: written in full to a temp file, then hard-linked
# (``ln`` fails when the marker exists), so a parallel step never reads a half-written marker.
PREPARE_SCRIPT = (
    'set -eu; umask 002; '
    'if [ -n "${CLARA_PAYLOAD_CHECK:-}" ] && [ ! -d "$CLARA_PAYLOAD_CHECK" ]; then '
    'echo "input payload $CLARA_PAYLOAD is not a folder on the claim $CLARA_CLAIM; check clara_payload" >&2; exit 2; fi; '
    'd="$CLARA_ROOT/$CLARA_RUN_DIR"; if ! mkdir -p "$d" 2>/dev/null; then '
    'echo "cannot create the output folder $d on ${CLARA_CLAIM:-the output volume} as $(id -u):$(id -g): make the '
    'claim\'s root group-owned by $(id -g), group-writable and setgid, once (chgrp $(id -g); chmod 2775: see '
    'docs/kubernetes.md, Storage)" >&2; exit 2; fi; t="$d/.claim-${HOSTNAME:-x}-$CLARA_STEP"; '
    'printf "%s" "$CLARA_RUN_ID" > "$t"; '
    'if ! ln "$t" "$d/' + RUN_MARKER + '" 2>/dev/null; then if [ ! -e "$d/' + RUN_MARKER + '" ]; then rm -f "$t"; '
    'echo "cannot make a hard link in $d on ${CLARA_CLAIM:-the output volume}: run folders need storage with hard '
    'links (not Azure Files over SMB: see docs/kubernetes.md, Storage)" >&2; exit 2; fi; '
    'owner=$(cat "$d/' + RUN_MARKER + '"); '
    'if [ "$owner" != "$CLARA_RUN_ID" ]; then rm -f "$t"; '
    'echo "output folder $d belongs to run $owner, not $CLARA_RUN_ID; refusing to overwrite it" >&2; exit 1; fi; fi; '
    'rm -f "$t"; rm -rf "$d/$CLARA_STEP"; mkdir -p "$d/$CLARA_STEP"; '
    'for s in $CLARA_SUBS; do mkdir -p "$d/$CLARA_STEP/$s"; done'
)
CLAIM_ROOT = "/clara-claim"
PREPARE = "clara-prepare-output"


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
    annotations: dict[str, str]


ANNOTATION_DAG, ANNOTATION_RUN = "clara-airflow/dag-id", "clara-airflow/run-id"  # on step pods, unabridged
STEP_LABEL = "clara-airflow/operator"  # every step pod has it


def label_value(text: str) -> str:
    """A valid label value by construction: at most 63 characters of ``A-Za-z0-9_.-``, beginning and
    ending with a letter or digit. Text that is not one already keeps a hash suffix, so it stays unique."""
    if len(text) <= 63 and _LABEL.fullmatch(text):
        return text
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:50].strip("_.-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{clean}-{digest}" if clean else digest


def pod_name(step_name: str) -> str:
    """The pod name prefix of a step, a DNS-1123 label (the provider appends a random suffix)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"clara-{step_name}".lower()))[:50].strip("-")


def pod_run(step: StepPlan, env: dict[str, str], payload: str, *, dag_id: str, run_id: str, claim: str | None,
            output_root: str, init_image: str) -> PodRun:
    """The pod of one step try.

    :param step: the step with the run's parameters substituted. :param env: its full environment.
    :param payload: the checked input payload (a path inside the claim, or a node path without one).
    """
    from kubernetes.client import models as k8s

    run_dir = f"{dag_id}/{run_folder_name(run_id)}"
    volumes, mounts = _storage(step, payload, run_dir, claim, output_root)
    return PodRun(
        image=f"{step.image}:{step.tag}", args=list(step.command),
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()], volumes=volumes, volume_mounts=mounts,
        init_containers=[_prepare_container(step, run_id, run_dir, claim, output_root, init_image, payload)],
        labels={"clara-airflow/dag-id": label_value(dag_id), "clara-airflow/operator": label_value(step.name),
                "clara-airflow/run": label_value(run_folder_name(run_id))},
        annotations={ANNOTATION_DAG: dag_id, ANNOTATION_RUN: run_id})  # exact: the reaper asks Airflow by them


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
                       init_image: str, payload: str) -> Any:
    """Claims the run folder and creates this step's (emptied on a retry), as the step's own user. On a
    claim it mounts the claim's root, so it creates every folder itself (the kubelet would create a
    missing sub-path as root) and first checks that the payload exists (the step would otherwise run on
    an empty folder the kubelet made up)."""
    from kubernetes.client import models as k8s

    subs = " ".join(m.sub for m in step.mounts if m.kind == "output" and m.sub)
    env = {"CLARA_RUN_DIR": run_dir, "CLARA_RUN_ID": run_id, "CLARA_STEP": step.name, "CLARA_SUBS": subs}
    if claim:
        env["CLARA_ROOT"] = f"{CLAIM_ROOT}/{output_root.strip('/')}".rstrip("/")
        mounts = [k8s.V1VolumeMount(name=PAYLOAD_VOLUME, mount_path=CLAIM_ROOT)]
        env["CLARA_CLAIM"] = claim
        if any(m.kind == "payload" for m in step.mounts):
            env.update(CLARA_PAYLOAD=payload, CLARA_PAYLOAD_CHECK=f"{CLAIM_ROOT}/{payload.strip('/')}")
    else:
        env["CLARA_ROOT"] = WORK_DIR
        mounts = [k8s.V1VolumeMount(name=OUTPUT_VOLUME, mount_path=WORK_DIR)]
    return k8s.V1Container(
        name=PREPARE, image=init_image, command=["/bin/sh", "-c", PREPARE_SCRIPT],
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()], volume_mounts=mounts,
        resources=k8s.V1ResourceRequirements(requests={"cpu": "100m", "memory": "32Mi"},
                                             limits={"cpu": "100m", "memory": "32Mi"}),
        security_context=container_security(), termination_message_policy="FallbackToLogsOnError")
