"""Kubernetes administration of services and step pods: status, stop, volumes, logs, what runs, and
the reaper's step pods. The base of :class:`clara_airflow.backends.kubernetes.KubernetesServiceManager`,
which adds finding or starting a service."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from clara_airflow.backends import kubernetes_services as objects
from clara_airflow.backends.base import LABEL_DEPLOYMENT, LABEL_ID, Managed, StepContainer, foreign_error, foreign_owner
from clara_airflow.backends.kubernetes_pods import age as _age
from clara_airflow.backends.kubernetes_pods import hook_kwargs
from clara_airflow.compiler.identity import service_name
from clara_airflow.errors import ServiceError
from clara_airflow.settings import Options

CONTAINER = objects.CONTAINER


class KubernetesAdmin:
    """What every command on services needs: the API clients of ``[clara]``'s cluster and namespace."""

    def __init__(self, options: Options) -> None:
        self.deployment_options = options.deployment
        self.namespace = options.pipeline.namespace
        self.data_dir = options.pipeline.services.data_dir

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(**hook_kwargs(self.deployment_options))

    @property
    def core(self) -> Any:
        return self.hook.core_v1_client

    @property
    def apps(self) -> Any:
        return self.hook.apps_v1_client

    def _pods(self, sid: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_ID}={sid}").items
        return [p for p in pods if (p.metadata.labels or {}).get(LABEL_ID) == sid]

    def status(self, sid: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            deployment = self.apps.read_namespaced_deployment(service_name(sid), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return "missing"
            raise
        if (deployment.spec.replicas or 0) == 0:
            return "scaled to 0"
        return "running" if (deployment.status.ready_replicas or 0) >= 1 else "starting"

    def stop(self, sid: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            labels = self.apps.read_namespaced_deployment(service_name(sid), self.namespace).metadata.labels
        except ApiException as exc:
            if exc.status != 404:
                raise
            labels = None
        owner = foreign_owner(labels, self.deployment_options.deployment_id)
        if owner is not None:
            raise ServiceError(foreign_error("Deployment", service_name(sid), owner))
        found = False
        for delete in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service):
            try:
                delete(service_name(sid), self.namespace)
                found = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return found

    def remove_volumes(self, sid: str) -> list[str]:
        """Delete the PersistentVolumeClaims of the service's volume connections (by their service label)."""
        from kubernetes.client.exceptions import ApiException

        claims = self.core.list_namespaced_persistent_volume_claim(
            self.namespace, label_selector=f"{LABEL_ID}={sid}").items
        names = sorted(c.metadata.name for c in claims)
        for name in names:
            try:
                self.core.delete_namespaced_persistent_volume_claim(name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return names

    def logs(self, sid: str, lines: int = 50) -> str:
        try:
            pods = self._pods(sid)
            if not pods:
                return ""
            answer = self.core.read_namespaced_pod_log(pods[0].metadata.name, self.namespace, container=CONTAINER,
                                                       tail_lines=lines, _preload_content=False)
            return str(answer.data.decode("utf-8", "replace")).rstrip()
        except Exception:
            return ""

    def list_managed(self) -> dict[str, Managed]:
        items = self.apps.list_namespaced_deployment(self.namespace, label_selector=LABEL_ID).items
        return {d.metadata.labels[LABEL_ID]: Managed(
            "running" if (d.status.ready_replicas or 0) >= 1 else "not ready", _age(d.metadata.creation_timestamp),
            d.metadata.labels.get(LABEL_DEPLOYMENT, "")) for d in items if LABEL_ID in (d.metadata.labels or {})}

    def list_steps(self) -> list[StepContainer]:
        """Step pods of this namespace that name their run (the annotations clara-airflow writes): a pod
        whose worker died, or that a failed step left for a look, is the reaper's once its run ended."""
        from clara_airflow.backends.kubernetes_steps import ANNOTATION_DAG, ANNOTATION_RUN, STEP_LABEL

        found = []
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=STEP_LABEL).items:
            notes = pod.metadata.annotations or {}
            if ANNOTATION_DAG in notes and ANNOTATION_RUN in notes:  # else: not ours to judge, left alone
                found.append(StepContainer(
                    ref=pod.metadata.name, name=pod.metadata.name, dag_id=notes[ANNOTATION_DAG],
                    run_id=notes[ANNOTATION_RUN], state=(pod.status.phase or "Unknown") if pod.status else "Unknown",
                    age=_age(pod.metadata.creation_timestamp),
                    deployment=(pod.metadata.labels or {}).get(LABEL_DEPLOYMENT, "")))
        return found

    def remove_step(self, ref: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(ref, self.namespace, grace_period_seconds=30)
        except ApiException as exc:
            if exc.status != 404:
                raise
