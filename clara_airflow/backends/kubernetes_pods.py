"""Kubernetes helpers shared by step pods and service Deployments: resources, GPU scheduling, the
Pod Security "restricted" contexts, the hook's connection arguments, and an object's age. Pure: the
kubernetes client is imported lazily."""

from __future__ import annotations

from typing import Any

from clara_airflow.backends.layout import step_user
from clara_airflow.compiler.plan import Requests
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.settings import Deployment

__all__ = ["CREATE_HINTS", "DEFAULT_USER", "age", "api_message", "container_security", "hook_kwargs", "pod_security", "pod_user", "resources",
           "scheduling"]

# Pods run as this UID:GID unless [clara] step_user says otherwise: Pod Security "restricted" admits no root.
DEFAULT_USER = (1000, 1000)


def pod_user(raw: str | None) -> tuple[int, int]:
    """The (uid, gid) every step and service container runs as on Kubernetes (never root)."""
    user = step_user(raw, local=False) or DEFAULT_USER
    if user[0] == 0:
        raise ClaraAirflowError(f"[clara] step_user {raw!r}: Kubernetes pods run as a non-root user (Pod Security "
                                "'restricted' refuses root); use a UID other than 0, or leave it unset for 1000:1000")
    return user


def container_security() -> Any:
    """What Pod Security "restricted" asks of every container: no privilege escalation, no capabilities,
    the runtime's default seccomp profile, and a non-root user (set on the pod)."""
    from kubernetes.client import models as k8s

    return k8s.V1SecurityContext(allow_privilege_escalation=False, privileged=False, run_as_non_root=True,
                                 capabilities=k8s.V1Capabilities(drop=["ALL"]),
                                 seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def pod_security(user: tuple[int, int], *, fs_group: bool = True) -> Any:
    """The pod's user and group, and (``fs_group``) ``fsGroup`` so that the volumes clara-airflow creates
    are writable by that group (``OnRootMismatch``: the kubelet changes ownership only when the volume's
    root does not match). Step pods on the payload claim get none: that claim holds patient data, and a
    kubelet applying fsGroup would re-own all of it at the first mount; its root is prepared once by an
    admin instead (docs/kubernetes.md, "Storage")."""
    from kubernetes.client import models as k8s

    return k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=user[0], run_as_group=user[1],
                                    fs_group=user[1] if fs_group else None,
                                    fs_group_change_policy="OnRootMismatch" if fs_group else None,
                                    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def resources(req: Requests) -> Any:
    """Section 5: equal requests and limits; memory in Mi; GPUs as ``nvidia.com/gpu``."""
    from kubernetes.client import models as k8s

    amounts = {"cpu": str(req.cpu), "memory": f"{req.memory}Mi"}
    if req.gpu:
        amounts["nvidia.com/gpu"] = str(req.gpu)
    return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def scheduling(deployment: Deployment, gpus: int) -> tuple[dict[str, str] | None, list[Any] | None]:
    """Node selector and tolerations: ``[clara] gpu_node_selector`` for GPU work, ``node_selector`` else."""
    from kubernetes.client import models as k8s

    selector = dict(deployment.gpu_node_selector if gpus else deployment.node_selector) or None
    tolerations = [k8s.V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                    effect=t.get("effect"), toleration_seconds=t.get("tolerationSeconds"))
                   for t in deployment.tolerations] if gpus else None
    return selector, tolerations or None


def hook_kwargs(deployment: Deployment) -> dict[str, Any]:
    return {"conn_id": deployment.kubernetes_conn_id, "config_file": deployment.kube_config_file,
            "in_cluster": deployment.in_cluster}


def age(created: Any) -> float:
    import datetime as _dt

    if isinstance(created, str):
        try:
            created = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return float("inf")
    if not isinstance(created, _dt.datetime):
        return float("inf")
    moment = created if created.tzinfo else created.replace(tzinfo=_dt.UTC)
    return (_dt.datetime.now(_dt.UTC) - moment).total_seconds()


CREATE_HINTS = {
    403: "; the worker's service account may not do this (RBAC, docs/kubernetes.md) or an admission policy refused it",
    404: "; the namespace does not exist (create it, or fix x-airflow namespace)",
    422: "; the cluster refused the object as invalid",
}


def api_message(exc: Any) -> str:
    """The Kubernetes API's own message of an ApiException (its Status body), else its reason."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
