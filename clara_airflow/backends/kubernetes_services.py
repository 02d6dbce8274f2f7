"""Pure builders of a Kubernetes service's objects: its Deployment (Pod Security "restricted"), its
Service, and its PersistentVolumeClaims, decided as data (deterministic: golden tests pin them)."""

from __future__ import annotations

import json
from typing import Any

from clara_airflow.backends.base import DATA_PATH_VAR, LABEL_DEPLOYMENT, LABEL_ID, LABEL_MANAGED
from clara_airflow.backends.kubernetes_pods import container_security, pod_security, pod_user, resources, scheduling
from clara_airflow.compiler.identity import service_name, volume_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.settings import Deployment

__all__ = ["CONTAINER", "SECRETS", "SPEC_HASH", "claim", "data_claim", "deployment", "service", "spec_hash"]

CONTAINER = "service"
SPEC_HASH = "clara-airflow/spec-hash"
# the same hash without the image pull secrets: when only these differ, a secret was rotated, and the
# Deployment can take the new ones (rolled out once no run uses the service)
SECRETS = "clara-airflow/spec-hash-without-pull-secrets"


def spec_hash(template: Any) -> str:
    """A short hash of a pod template: two Deployments of one identity with different settings differ."""
    import hashlib

    from kubernetes.client import ApiClient

    plain = ApiClient().sanitize_for_serialization(template)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def _readiness(svc: ServicePlan) -> Any:
    """The inference server of ``models`` answers KServe v2 ``/v2/health/ready``; other services are ready
    once their first port accepts connections (their HTTP routes are not known)."""
    from kubernetes.client import models as k8s

    if svc.models:
        return k8s.V1Probe(http_get=k8s.V1HTTPGetAction(path="/v2/health/ready", port=8000), period_seconds=2,
                           failure_threshold=3)
    ports = svc.ports
    return k8s.V1Probe(tcp_socket=k8s.V1TCPSocketAction(port=ports[0]), period_seconds=2,
                       failure_threshold=3) if ports else None


def _liveness(svc: ServicePlan) -> tuple[Any, Any]:
    """(startup probe, liveness probe) for a service with a port: a hung server is restarted by the kubelet,
    and a slow start (an inference server loading models, up to 10 min) is not mistaken for a hang."""
    from kubernetes.client import models as k8s

    if not svc.ports:
        return None, None
    if svc.models:
        check: dict[str, Any] = {"http_get": k8s.V1HTTPGetAction(path="/v2/health/live", port=8000)}
    else:
        check = {"tcp_socket": k8s.V1TCPSocketAction(port=svc.ports[0])}
    return (k8s.V1Probe(period_seconds=10, failure_threshold=60, **check),
            k8s.V1Probe(period_seconds=10, failure_threshold=6, timeout_seconds=5, **check))


def deployment(svc: ServicePlan, namespace: str, data_dir: str, options: Deployment) -> Any:
    """The Deployment of one identity (deterministic: a golden test pins it)."""
    from kubernetes.client import models as k8s

    env = [k8s.V1EnvVar(name=k, value=v) for k, v in svc.variables]
    env.append(k8s.V1EnvVar(name=DATA_PATH_VAR, value=data_dir))
    ports = svc.ports
    volumes = [k8s.V1Volume(name="service-data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
        claim_name=options.service_data_claim))]
    mounts = [k8s.V1VolumeMount(name="service-data", mount_path=data_dir)]
    for index, (_, path) in enumerate(svc.volumes):
        volumes.append(k8s.V1Volume(name=f"volume-{index}", persistent_volume_claim=(
            k8s.V1PersistentVolumeClaimVolumeSource(claim_name=volume_name(svc.id, path)))))
        mounts.append(k8s.V1VolumeMount(name=f"volume-{index}", mount_path=path))
    for index, (host, path) in enumerate(svc.host_mounts):
        volumes.append(k8s.V1Volume(name=f"host-{index}", host_path=k8s.V1HostPathVolumeSource(path=host)))
        mounts.append(k8s.V1VolumeMount(name=f"host-{index}", mount_path=path, read_only=True))
    probe = _readiness(svc)
    startup, liveness = _liveness(svc)
    selector, tolerations = scheduling(options, svc.requests.gpu)
    labels = {LABEL_ID: svc.id, LABEL_MANAGED: "true", **owned(options)}
    container = k8s.V1Container(
        name=CONTAINER, image=f"{svc.image}:{svc.tag}", args=list(svc.command) or None, env=env,
        ports=[k8s.V1ContainerPort(container_port=p, name=f"p{p}") for p in ports] or None,
        readiness_probe=probe, startup_probe=startup, liveness_probe=liveness, resources=resources(svc.requests),
        volume_mounts=mounts,
        security_context=container_security(), termination_message_policy="FallbackToLogsOnError")
    pod = k8s.V1PodSpec(
        containers=[container], volumes=volumes, node_selector=selector, tolerations=tolerations,
        service_account_name=options.service_account, automount_service_account_token=False,
        security_context=pod_security(pod_user(options.step_user)),
        image_pull_secrets=None)
    template = k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod)
    without_secrets = spec_hash(template)
    pod.image_pull_secrets = [k8s.V1LocalObjectReference(name=s) for s in svc.pull_secrets] or None
    return k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=service_name(svc.id), namespace=namespace, labels=labels,
                                  annotations={"clara-airflow/identity": json.dumps(
                                      [svc.image, svc.tag, list(svc.command)]),
                                      SPEC_HASH: spec_hash(template), SECRETS: without_secrets}),
        # Recreate: a rollout never needs a second GPU or a second attach of a ReadWriteOnce volume
        spec=k8s.V1DeploymentSpec(replicas=1, selector=k8s.V1LabelSelector(match_labels={LABEL_ID: svc.id}),
                                  template=template, strategy=k8s.V1DeploymentStrategy(type="Recreate")))

def owned(options: Deployment) -> dict[str, str]:
    """The deployment label of what clara-airflow creates ({} when no identity was resolved: tools, goldens)."""
    return {LABEL_DEPLOYMENT: options.deployment_id} if options.deployment_id else {}


def service(svc: ServicePlan, namespace: str, options: Deployment | None = None) -> Any:
    from kubernetes.client import models as k8s

    ports = svc.ports
    return k8s.V1Service(
        api_version="v1", kind="Service",
        metadata=k8s.V1ObjectMeta(name=service_name(svc.id), namespace=namespace,
                                  labels={LABEL_ID: svc.id, LABEL_MANAGED: "true",
                                          **(owned(options) if options else {})}),
        spec=k8s.V1ServiceSpec(selector={LABEL_ID: svc.id}, type="ClusterIP",
                               ports=[k8s.V1ServicePort(name=f"p{p}", port=p, target_port=p) for p in ports]
                               or [k8s.V1ServicePort(name="none", port=80, target_port=80)]))

def claim(sid: str, path: str, namespace: str, options: Deployment) -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1PersistentVolumeClaim(
        api_version="v1", kind="PersistentVolumeClaim",
        metadata=k8s.V1ObjectMeta(name=volume_name(sid, path), namespace=namespace,
                                  labels={LABEL_ID: sid, LABEL_MANAGED: "true"}),
        spec=_claim_spec(options.volume_size, options.volume_access_mode, options))

def data_claim(namespace: str, options: Deployment) -> Any:
    """The service data folder's claim, shared by every service of the namespace (``[clara]
    service_data_claim``), created once if missing."""
    from kubernetes.client import models as k8s

    return k8s.V1PersistentVolumeClaim(
        api_version="v1", kind="PersistentVolumeClaim",
        metadata=k8s.V1ObjectMeta(name=options.service_data_claim, namespace=namespace,
                                  labels={LABEL_MANAGED: "true"}),
        spec=_claim_spec(options.service_data_size, options.service_data_access_mode, options))

def _claim_spec(size: str, mode: str, options: Deployment) -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1PersistentVolumeClaimSpec(
        access_modes=[mode],
        storage_class_name=options.storage_class,
        resources=k8s.V1VolumeResourceRequirements(requests={"storage": size}))
