"""What a service that is not ready yet waits for: fatal at once, or logged once and waited out."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import MagicMock

import pytest
from kubernetes.client import models as k8s

from clara_airflow.backends.kubernetes import KubernetesServiceManager
from clara_airflow.backends.kubernetes_watch import claim_findings, pod_findings, storage_refusal
from clara_airflow.errors import ServiceError
from tests.helpers import busybox_service, make_options

SVC: Any = busybox_service("0123456789ab", "exec httpd -f -p 8080 -h /", 8080, "web")
POD = "clara-svc-0123456789ab-7d9f"


def waiting_pod(reason: str, message: str) -> Any:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=POD, labels={"clara-airflow/service-id": SVC.id}),
                     status=k8s.V1PodStatus(container_statuses=[k8s.V1ContainerStatus(
                         name="service", image="x", image_id="", ready=False, restart_count=0,
                         state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=reason,
                                                                                         message=message)))]))


def unschedulable_pod() -> Any:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=POD, labels={"clara-airflow/service-id": SVC.id}),
                     status=k8s.V1PodStatus(phase="Pending", conditions=[k8s.V1PodCondition(
                         type="PodScheduled", status="False", reason="Unschedulable",
                         message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")]))


def event(kind: str, name: str, reason: str, message: str) -> Any:
    return k8s.CoreV1Event(metadata=k8s.V1ObjectMeta(), reason=reason, message=message,
                           involved_object=k8s.V1ObjectReference(kind=kind, name=name))


def deployment(ready: int) -> Any:
    return k8s.V1Deployment(metadata=k8s.V1ObjectMeta(name="clara-svc-0123456789ab"), spec=k8s.V1DeploymentSpec(
        replicas=1, selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DeploymentStatus(ready_replicas=ready))


@pytest.fixture
def manager() -> KubernetesServiceManager:
    manager = KubernetesServiceManager(make_options({"namespace": "radiology"}))
    manager.POLL = 0.01
    manager.__dict__["hook"] = MagicMock()
    manager.hook.core_v1_client.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[])
    manager.hook.core_v1_client.read_namespaced_persistent_volume_claim.return_value = k8s.V1PersistentVolumeClaim(
        metadata=k8s.V1ObjectMeta(name="clara-service-data"), status=k8s.V1PersistentVolumeClaimStatus(phase="Bound"))
    return manager


@pytest.mark.parametrize(("message", "fatal"), [
    ('failed to pull "registry.local/triton:23": 429 Too Many Requests', False),
    ('failed to pull: unexpected status from HEAD request: 503 Service Unavailable', False),
    ("dial tcp 10.0.0.9:443: i/o timeout", False),
    ('failed to resolve reference "registry.local/triton:24": not found', True),
    ("pull access denied, repository does not exist or may require authorization", True),
    ("unexpected status: 401 Unauthorized", True),
])
def test_a_pull_error_is_fatal_only_when_it_names_a_missing_image_or_refused_credentials(message: str,
                                                                                         fatal: bool) -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        (finding,) = pod_findings(waiting_pod(reason, message), [])
        assert finding.fatal is fatal and message in finding.text


def test_a_temporary_pull_error_is_logged_once_and_waited_out(manager: KubernetesServiceManager) -> None:
    core, apps = manager.hook.core_v1_client, manager.hook.apps_v1_client
    apps.read_namespaced_deployment.side_effect = [deployment(0)] * 4 + [deployment(1)]
    core.list_namespaced_pod.return_value = k8s.V1PodList(items=[waiting_pod("ErrImagePull", "429 Too Many Requests")])
    log = MagicMock(spec=logging.Logger)
    instance = manager.ensure(SVC, timeout=30, log=log)
    assert instance.sid == SVC.id
    warned = [c.args[0] % c.args[1:] for c in log.warning.call_args_list]
    assert len(warned) == 1 and "is ErrImagePull (429 Too Many Requests); a temporary registry error" in warned[0]


def test_an_unschedulable_pod_is_reported_at_once_and_named_in_the_timeout(manager: KubernetesServiceManager) -> None:
    core, apps = manager.hook.core_v1_client, manager.hook.apps_v1_client
    apps.read_namespaced_deployment.return_value = deployment(0)
    core.list_namespaced_pod.return_value = k8s.V1PodList(items=[unschedulable_pod()])
    log = MagicMock(spec=logging.Logger)
    with pytest.raises(ServiceError) as info:
        manager.ensure(SVC, timeout=0.3, log=log)
    assert f"pod {POD} cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(info.value)
    warned = [c.args[0] % c.args[1:] for c in log.warning.call_args_list]
    assert len(warned) == 1 and "cannot be scheduled: 0/3 nodes" in warned[0], "logged once, on the first look"


def test_an_autoscaler_that_will_not_help_fails_at_once(manager: KubernetesServiceManager) -> None:
    core, apps = manager.hook.core_v1_client, manager.hook.apps_v1_client
    apps.read_namespaced_deployment.return_value = deployment(0)
    core.list_namespaced_pod.return_value = k8s.V1PodList(items=[unschedulable_pod()])
    core.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[event(
        "Pod", POD, "NotTriggerScaleUp", "pod didn't trigger scale-up: 2 max node group size reached")])
    with pytest.raises(ServiceError, match="the cluster autoscaler will not add a node for it: pod didn't trigger "
                                           "scale-up: 2 max node group size reached"):
        manager.ensure(SVC, timeout=3, log=logging.getLogger("t"))  # without it: the timeout's message


def test_a_claim_refused_by_its_provisioner_is_fatal_with_the_event_until_it_binds() -> None:
    pending = k8s.V1PersistentVolumeClaim(metadata=k8s.V1ObjectMeta(name="clara-service-data"),
                                          status=k8s.V1PersistentVolumeClaimStatus(phase="Pending"))
    events = [event("PersistentVolumeClaim", "clara-service-data", "ProvisioningFailed", "first"),
              event("PersistentVolumeClaim", "clara-service-data", "ProvisioningFailed", "AccessMode not supported"),
              event("PersistentVolumeClaim", "other", "ProvisioningFailed", "not ours"),
              event("Pod", "clara-service-data", "ProvisioningFailed", "not a claim")]
    (finding,) = claim_findings(pending, events)
    assert finding.fatal and "claim clara-service-data cannot be provisioned: AccessMode not supported" in finding.text
    pending.status.phase = "Bound"
    assert claim_findings(pending, events) == [], "a claim that bound since is fine"


def storage_class(name: str, provisioner: str, default: bool = False) -> Any:
    notes = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return k8s.V1StorageClass(metadata=k8s.V1ObjectMeta(name=name, annotations=notes), provisioner=provisioner)


def test_readwritemany_of_a_readwriteonce_only_class_is_refused_with_what_to_set() -> None:
    classes = [storage_class("gp3", "ebs.csi.aws.com", default=True), storage_class("efs", "efs.csi.aws.com")]
    refusal = storage_refusal(classes, None, {"ReadWriteMany"})
    assert refusal and "storage class gp3 (the cluster's default) is provisioned by ebs.csi.aws.com" in refusal
    assert "Set [clara] storage_class to a ReadWriteMany class" in refusal
    assert storage_refusal(classes, "efs", {"ReadWriteMany"}) is None
    assert storage_refusal(classes, "gp3", {"ReadWriteMany", "ReadWriteOnce"}) is not None
    assert storage_refusal(classes, None, {"ReadWriteOnce"}) is None, "one node: ReadWriteOnce works"
    assert storage_refusal(classes, "unknown", {"ReadWriteMany"}) is None, "a class it cannot see is not judged"
    assert storage_refusal([storage_class("nfs", "nfs.csi.k8s.io", default=True)], None, {"ReadWriteMany"}) is None


def test_readwriteoncepod_is_refused_where_it_is_set() -> None:
    from clara_airflow.settings.deployment import _access_mode

    with pytest.raises(ValueError, match="ReadWriteOncePod cannot work here: a service and the steps that use it"):
        _access_mode("ReadWriteOncePod")
    assert _access_mode(" ReadWriteOnce ") == "ReadWriteOnce"
