"""Kubernetes helpers shared by step pods and service Deployments: resources, GPU scheduling, the
hook's connection arguments, and an object's age. Pure: the kubernetes client is imported lazily."""

from __future__ import annotations

from typing import Any

from clara_airflow.compiler.plan import Requests
from clara_airflow.settings import Deployment

__all__ = ["age", "hook_kwargs", "resources", "scheduling"]


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
    tolerations = [k8s.V1Toleration(**t) for t in deployment.tolerations] if gpus else None
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
