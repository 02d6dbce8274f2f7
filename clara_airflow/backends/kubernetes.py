"""Kubernetes backend: shared services as one Deployment plus one Service each, created through the
provider's KubernetesHook. Step pods are decided in ``kubernetes_steps.py`` and run by
``clara_airflow.operators.kubernetes_step``.

The object *name* ``clara-svc-<id>`` is the start lock: a second create gets HTTP 409 (AlreadyExists)
and reuses the winner's Deployment. Connection values are ``<name>.<namespace>.svc.cluster.local:<port>``.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import Any

from clara_airflow.backends.base import DATA_PATH_VAR, LABEL_ID, LABEL_MANAGED, Managed, ServiceInstance, StepContainer
from clara_airflow.backends.kubernetes_pods import age as _age
from clara_airflow.backends.kubernetes_pods import hook_kwargs, resources, scheduling
from clara_airflow.compiler.identity import service_name, volume_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.errors import ServiceError
from clara_airflow.settings import Options

CONTAINER = "service"


class KubernetesBackend:
    """A Kubernetes cluster: hands out the service manager (step tasks are built in clara_airflow.operators)."""

    name = "kubernetes"

    def __init__(self, options: Options) -> None:
        self.options = options

    def service_manager(self) -> KubernetesServiceManager:
        return KubernetesServiceManager(self.options)


class KubernetesServiceManager:
    """Finds or creates a service's Deployment and Service, and waits until its pod is ready."""

    POLL = 0.5

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

    def host(self, sid: str) -> str:
        return f"{service_name(sid)}.{self.namespace}.svc.cluster.local"

    # -- objects ----------------------------------------------------------------------------------------
    def deployment(self, svc: ServicePlan) -> Any:
        """The Deployment of one identity (deterministic: a golden test pins it)."""
        from kubernetes.client import models as k8s

        env = [k8s.V1EnvVar(name=k, value=v) for k, v in svc.variables]
        env.append(k8s.V1EnvVar(name=DATA_PATH_VAR, value=self.data_dir))
        ports = svc.ports
        volumes = [k8s.V1Volume(name="service-data", empty_dir=k8s.V1EmptyDirVolumeSource())]
        mounts = [k8s.V1VolumeMount(name="service-data", mount_path=self.data_dir)]
        for index, (_, path) in enumerate(svc.volumes):
            volumes.append(k8s.V1Volume(name=f"volume-{index}", persistent_volume_claim=(
                k8s.V1PersistentVolumeClaimVolumeSource(claim_name=volume_name(svc.id, path)))))
            mounts.append(k8s.V1VolumeMount(name=f"volume-{index}", mount_path=path))
        for index, (host, path) in enumerate(svc.host_mounts):
            volumes.append(k8s.V1Volume(name=f"host-{index}", host_path=k8s.V1HostPathVolumeSource(path=host)))
            mounts.append(k8s.V1VolumeMount(name=f"host-{index}", mount_path=path, read_only=True))
        probe = k8s.V1Probe(tcp_socket=k8s.V1TCPSocketAction(port=ports[0]), period_seconds=2,
                            failure_threshold=3) if ports else None
        selector, tolerations = scheduling(self.deployment_options, svc.requests.gpu)
        labels = {LABEL_ID: svc.id, LABEL_MANAGED: "true"}
        container = k8s.V1Container(
            name=CONTAINER, image=f"{svc.image}:{svc.tag}", args=list(svc.command) or None, env=env,
            ports=[k8s.V1ContainerPort(container_port=p, name=f"p{p}") for p in ports] or None,
            readiness_probe=probe, resources=resources(svc.requests), volume_mounts=mounts,
            security_context=k8s.V1SecurityContext(allow_privilege_escalation=False, privileged=False))
        return k8s.V1Deployment(
            api_version="apps/v1", kind="Deployment",
            metadata=k8s.V1ObjectMeta(name=service_name(svc.id), namespace=self.namespace, labels=labels,
                                      annotations={"clara-airflow/identity": json.dumps(
                                          [svc.image, svc.tag, list(svc.command)])}),
            spec=k8s.V1DeploymentSpec(
                replicas=1, selector=k8s.V1LabelSelector(match_labels={LABEL_ID: svc.id}),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=k8s.V1PodSpec(containers=[container], volumes=volumes, node_selector=selector,
                                       tolerations=tolerations,
                                       service_account_name=self.deployment_options.service_account))))

    def service(self, svc: ServicePlan) -> Any:
        from kubernetes.client import models as k8s

        ports = svc.ports
        return k8s.V1Service(
            api_version="v1", kind="Service",
            metadata=k8s.V1ObjectMeta(name=service_name(svc.id), namespace=self.namespace,
                                      labels={LABEL_ID: svc.id, LABEL_MANAGED: "true"}),
            spec=k8s.V1ServiceSpec(selector={LABEL_ID: svc.id}, type="ClusterIP",
                                   ports=[k8s.V1ServicePort(name=f"p{p}", port=p, target_port=p) for p in ports]
                                   or [k8s.V1ServicePort(name="none", port=80, target_port=80)]))

    def claim(self, sid: str, path: str) -> Any:
        from kubernetes.client import models as k8s

        return k8s.V1PersistentVolumeClaim(
            api_version="v1", kind="PersistentVolumeClaim",
            metadata=k8s.V1ObjectMeta(name=volume_name(sid, path), namespace=self.namespace,
                                      labels={LABEL_ID: sid, LABEL_MANAGED: "true"}),
            spec=k8s.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteMany"],
                                                 resources=k8s.V1VolumeResourceRequirements(
                                                     requests={"storage": "1Gi"})))

    # -- find or start ------------------------------------------------------------------------------------
    def ensure(self, svc: ServicePlan, *, timeout: float, log: Any) -> ServiceInstance:
        """Return the ready instance of ``svc``, creating its claims, Deployment and Service if needed."""
        from urllib3.exceptions import HTTPError as TransportError

        try:
            return self._ensure(svc, timeout=timeout, log=log)
        except TransportError as exc:
            raise ServiceError(
                f"the Kubernetes API server does not answer ({exc}); check [clara] kubernetes_conn_id, "
                "kube_config_file or in_cluster, and that the worker can reach the cluster") from None

    def _ensure(self, svc: ServicePlan, *, timeout: float, log: Any) -> ServiceInstance:
        name = service_name(svc.id)
        deadline = time.monotonic() + timeout
        for _, path in svc.volumes:
            self._create(self.core.create_namespaced_persistent_volume_claim, self.claim(svc.id, path))
        created = self._create(self.apps.create_namespaced_deployment, self.deployment(svc))
        if not self._create(self.core.create_namespaced_service, self.service(svc)):
            self._add_ports(svc, log)
        log.info("%s Deployment %s in namespace %s", "created" if created else "found", name, self.namespace)
        deployment = self._wait_ready(svc, deadline, log)
        started = deployment.metadata.creation_timestamp
        return ServiceInstance(sid=svc.id, host=self.host(svc.id), created=created, ref=name,
                               started_at=started.isoformat() if hasattr(started, "isoformat") else str(started or ""),
                               volumes={p: volume_name(svc.id, p) for _, p in svc.volumes})

    def _create(self, create: Any, body: Any) -> bool:
        """True when this call created the object, False on 409 (it exists: someone else won)."""
        from kubernetes.client.exceptions import ApiException

        try:
            create(namespace=self.namespace, body=body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise ServiceError(f"cannot create {body.kind} {body.metadata.name} in namespace {self.namespace}: "
                               f"{exc.status} {exc.reason}; check the RBAC of the worker's service account "
                               "(docs/kubernetes.md)") from None

    def _add_ports(self, svc: ServicePlan, log: Any) -> None:
        """Section 7.4: new ports of a running identity are added to its Service object."""
        existing = self.core.read_namespaced_service(service_name(svc.id), self.namespace)
        have = {p.port for p in existing.spec.ports or []}
        wanted = sorted(set(svc.ports) - have)
        if wanted:
            log.info("adding ports %s to Service %s", wanted, service_name(svc.id))
            ports = [{"name": p.name, "port": p.port, "targetPort": p.target_port} for p in existing.spec.ports or []
                     if p.name != "none"]
            ports += [{"name": f"p{p}", "port": p, "targetPort": p} for p in wanted]
            self.core.patch_namespaced_service(service_name(svc.id), self.namespace, {"spec": {"ports": ports}})

    def _wait_ready(self, svc: ServicePlan, deadline: float, log: Any) -> Any:
        name = service_name(svc.id)
        while True:
            deployment = self.apps.read_namespaced_deployment(name, self.namespace)
            if (deployment.spec.replicas or 0) == 0:
                log.warning("Deployment %s was scaled to 0; scaling it back to 1", name)
                self.apps.patch_namespaced_deployment(name, self.namespace, {"spec": {"replicas": 1}})
            elif (deployment.status.ready_replicas or 0) >= 1:
                return deployment
            self._fail_if_crashing(svc)
            if time.monotonic() > deadline:
                raise ServiceError(f"service {name} ({svc.image}:{svc.tag}) was not ready in time "
                                   f"(services.start_timeout){self._events(svc.id)}", logs=self.logs(svc.id))
            time.sleep(self.POLL)

    def _pods(self, sid: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_ID}={sid}").items
        return [p for p in pods if (p.metadata.labels or {}).get(LABEL_ID) == sid]

    def _fail_if_crashing(self, svc: ServicePlan) -> None:
        for pod in self._pods(svc.id):
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in ("CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff",
                                                               "CreateContainerConfigError", "InvalidImageName"):
                    raise ServiceError(f"service {service_name(svc.id)} ({svc.image}:{svc.tag}) cannot start: pod "
                                       f"{pod.metadata.name} is {waiting.reason} ({waiting.message or 'no message'})"
                                       f"{self._events(svc.id)}", logs=self.logs(svc.id))

    def _events(self, sid: str) -> str:
        try:
            events = self.core.list_namespaced_event(self.namespace).items
        except Exception:
            return ""
        names = {p.metadata.name for p in self._pods(sid)} | {service_name(sid)}
        lines = [f"{e.reason}: {e.message}" for e in events
                 if e.involved_object is not None and e.involved_object.name in names][-10:]
        return ("\n--- recent events ---\n" + "\n".join(lines)) if lines else ""

    # -- administration -------------------------------------------------------------------------------------
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
            "running" if (d.status.ready_replicas or 0) >= 1 else "not ready", _age(d.metadata.creation_timestamp))
            for d in items if LABEL_ID in (d.metadata.labels or {})}

    def list_steps(self) -> list[StepContainer]:
        """Step pods are deleted by KubernetesPodOperator itself, and re-attached after a worker crash."""
        return []

    def remove_step(self, ref: str) -> None:
        raise NotImplementedError("step pods are cleaned up by KubernetesPodOperator")
