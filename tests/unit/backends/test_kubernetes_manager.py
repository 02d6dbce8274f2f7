"""KubernetesServiceManager decisions against mocked API clients: crash loops, ports, RBAC errors."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import MagicMock

import pytest
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from clara_airflow.backends.kubernetes import KubernetesServiceManager
from clara_airflow.errors import ServiceError
from tests.helpers import busybox_service, make_options

SVC: Any = busybox_service("0123456789ab", "exec httpd -f -p 8080 -h /", 8080, "web")


@pytest.fixture
def manager() -> KubernetesServiceManager:
    manager = KubernetesServiceManager(make_options({"namespace": "radiology"}))
    manager.__dict__["hook"] = MagicMock()
    return manager


def pod(reason: str) -> Any:
    waiting = k8s.V1ContainerStateWaiting(reason=reason, message="back-off 40s restarting failed container")
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="clara-svc-0123456789ab-7d9f", labels={
        "clara-airflow/service-id": SVC.id}), status=k8s.V1PodStatus(container_statuses=[k8s.V1ContainerStatus(
            name="service", image="x", image_id="", ready=False, restart_count=5,
            state=k8s.V1ContainerState(waiting=waiting))]))


def test_crash_loop_is_reported_with_events_and_logs(manager: KubernetesServiceManager) -> None:
    core, apps = manager.hook.core_v1_client, manager.hook.apps_v1_client
    apps.read_namespaced_deployment.return_value = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="clara-svc-0123456789ab"), spec=k8s.V1DeploymentSpec(
            replicas=1, selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DeploymentStatus(ready_replicas=0))
    core.list_namespaced_pod.return_value = k8s.V1PodList(items=[pod("CrashLoopBackOff")])
    core.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(), reason="BackOff", message="Back-off restarting failed container",
        involved_object=k8s.V1ObjectReference(name="clara-svc-0123456789ab-7d9f"))])
    core.read_namespaced_pod_log.return_value = MagicMock(data=b"model repository not found\n")
    with pytest.raises(ServiceError) as info:
        manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))
    text = str(info.value)
    assert "is CrashLoopBackOff" in text and "BackOff: Back-off restarting failed container" in text
    assert "model repository not found" in text


def test_a_refused_create_keeps_the_apis_own_message(manager: KubernetesServiceManager) -> None:
    import json

    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"kind": "Status", "message": 'deployments.apps is forbidden: User "system:serviceaccount:'
                                 'airflow:worker" cannot create resource "deployments" in API group "apps"'})
    manager.hook.apps_v1_client.create_namespaced_deployment.side_effect = forbidden
    with pytest.raises(ServiceError, match=r'403 Forbidden: deployments.apps is forbidden: User "system:serviceaccount:'
                                           r'airflow:worker" cannot create .*; the worker\'s service account may not'):
        manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))
    missing = ApiException(status=404, reason="Not Found")
    missing.body = "not json"
    manager.hook.apps_v1_client.create_namespaced_deployment.side_effect = missing
    with pytest.raises(ServiceError, match="404 Not Found: Not Found; the namespace does not exist"):
        manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))


def test_new_ports_are_added_to_an_existing_service(manager: KubernetesServiceManager) -> None:
    core = manager.hook.core_v1_client
    core.create_namespaced_service.side_effect = ApiException(status=409, reason="AlreadyExists")
    core.read_namespaced_service.return_value = k8s.V1Service(spec=k8s.V1ServiceSpec(
        ports=[k8s.V1ServicePort(name="p9000", port=9000, target_port=9000)]))
    manager.hook.apps_v1_client.read_namespaced_deployment.return_value = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="x"), spec=k8s.V1DeploymentSpec(replicas=1, selector=k8s.V1LabelSelector(),
                                                                         template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DeploymentStatus(ready_replicas=1))
    instance = manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))
    assert instance.host == "clara-svc-0123456789ab.radiology.svc"
    body = core.patch_namespaced_service.call_args.args[2]
    assert [p["port"] for p in body["spec"]["ports"]] == [9000, 8080]


def test_remove_volumes_deletes_the_claims_labelled_with_the_service(manager: KubernetesServiceManager) -> None:
    core = manager.hook.core_v1_client
    core.list_namespaced_persistent_volume_claim.return_value = k8s.V1PersistentVolumeClaimList(items=[
        k8s.V1PersistentVolumeClaim(metadata=k8s.V1ObjectMeta(name=f"clara-svc-{SVC.id}-{n}")) for n in ("b", "a")])
    core.delete_namespaced_persistent_volume_claim.side_effect = [None, ApiException(status=404)]
    assert manager.remove_volumes(SVC.id) == [f"clara-svc-{SVC.id}-a", f"clara-svc-{SVC.id}-b"]
    core.list_namespaced_persistent_volume_claim.assert_called_once_with(
        "radiology", label_selector=f"clara-airflow/service-id={SVC.id}")
    assert core.delete_namespaced_persistent_volume_claim.call_count == 2


def test_an_unreachable_api_server_is_named_with_the_settings_to_check(manager: KubernetesServiceManager) -> None:
    from urllib3.exceptions import MaxRetryError

    manager.hook.apps_v1_client.create_namespaced_deployment.side_effect = MaxRetryError(
        None, "/apis/apps/v1/namespaces/radiology/deployments", "Connection refused")  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match=r"the Kubernetes API server does not answer .*kubernetes_conn_id"):
        manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))


def _found(annotations: dict[str, str], ready: int = 1, conditions: Any = None) -> Any:
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="clara-svc-0123456789ab", annotations=annotations),
        spec=k8s.V1DeploymentSpec(replicas=1, selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DeploymentStatus(ready_replicas=ready, conditions=conditions))


@pytest.mark.parametrize("same", [True, False])
def test_a_found_deployment_with_another_configuration_is_reported(manager: KubernetesServiceManager,
                                                                   same: bool) -> None:
    apps = manager.hook.apps_v1_client
    apps.create_namespaced_deployment.side_effect = ApiException(status=409, reason="Conflict")
    manager.hook.core_v1_client.create_namespaced_service.side_effect = ApiException(status=409, reason="Conflict")
    manager.hook.core_v1_client.read_namespaced_service.return_value = k8s.V1Service(spec=k8s.V1ServiceSpec(
        ports=[k8s.V1ServicePort(port=8080)]))
    wanted = manager.deployment(SVC).metadata.annotations["clara-airflow/spec-hash"]
    apps.read_namespaced_deployment.return_value = _found({"clara-airflow/spec-hash": wanted if same else "other"})
    log = MagicMock(spec=logging.Logger)
    found = manager.ensure(SVC, timeout=5, log=log)
    assert not found.created and found.host == "clara-svc-0123456789ab.radiology.svc"
    warned = [c.args[0] % c.args[1:] for c in log.warning.call_args_list]
    assert bool(warned) is not same
    if not same:
        assert "runs with another configuration" in warned[0] and "services stop 0123456789ab" in warned[0]


def test_a_pod_the_namespace_refuses_fails_at_once_with_the_reason(manager: KubernetesServiceManager) -> None:
    condition = k8s.V1DeploymentCondition(type="ReplicaFailure", status="True", reason="FailedCreate",
                                          message='pods "clara-svc-x" is forbidden: exceeded quota: gpu')
    manager.hook.apps_v1_client.read_namespaced_deployment.return_value = _found({}, ready=0, conditions=[condition])
    manager.hook.core_v1_client.list_namespaced_pod.return_value = k8s.V1PodList(items=[])
    manager.hook.core_v1_client.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(), reason="FailedCreate", message="exceeded quota: gpu",
        involved_object=k8s.V1ObjectReference(name="clara-svc-0123456789ab-5f7c9")), k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(), reason="Other", message="not ours",
        involved_object=k8s.V1ObjectReference(name="clara-svc-ffffffffffff"))])
    with pytest.raises(ServiceError) as info:
        manager.ensure(SVC, timeout=300, log=logging.getLogger("t"))
    text = str(info.value)
    assert text.startswith("service clara-svc-0123456789ab (clara-airflow/busybox:1) cannot start: its Deployment "
                           'cannot create a pod: FailedCreate: pods "clara-svc-x" is forbidden: exceeded quota: gpu')
    assert "FailedCreate: exceeded quota: gpu" in text and "not ours" not in text


def test_the_service_data_claim_is_created_once_with_the_configured_storage(manager: KubernetesServiceManager) -> None:
    made = KubernetesServiceManager(make_options({"namespace": "radiology", "storage_class": "nfs-client",
                                                  "service_data_size": "50Gi", "volume_access_mode": "ReadWriteOnce"}))
    claim = made.data_claim()
    assert claim.metadata.name == "clara-service-data" and claim.spec.storage_class_name == "nfs-client"
    # volume_access_mode is the volume connections' (as the docs say); the data claim has its own setting
    assert claim.spec.resources.requests == {"storage": "50Gi"} and claim.spec.access_modes == ["ReadWriteMany"]
    assert made.claim(SVC.id, "/models").spec.access_modes == ["ReadWriteOnce"]
    single = KubernetesServiceManager(make_options({"namespace": "radiology", "service_data_access_mode": "ReadWriteOnce"}))
    assert single.data_claim().spec.access_modes == ["ReadWriteOnce"]


def _secrets_case(manager: KubernetesServiceManager, found_secrets: list[str]) -> tuple[Any, Any]:
    """A found Deployment identical to the wanted one but for its image pull secrets."""
    import dataclasses

    apps, core = manager.hook.apps_v1_client, manager.hook.core_v1_client
    apps.create_namespaced_deployment.side_effect = ApiException(status=409, reason="Conflict")
    core.create_namespaced_service.side_effect = ApiException(status=409, reason="Conflict")
    core.read_namespaced_service.return_value = k8s.V1Service(spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(port=8080)]))
    old = manager.deployment(dataclasses.replace(SVC, pull_secrets=tuple(found_secrets))).metadata.annotations
    apps.read_namespaced_deployment.return_value = _found(dict(old))
    return apps, dataclasses.replace(SVC, pull_secrets=("registry-2026",))


@pytest.mark.parametrize("alone", [True, False])
def test_a_rotated_pull_secret_is_rolled_out_only_when_no_other_run_uses_the_service(
        manager: KubernetesServiceManager, alone: bool) -> None:
    apps, svc = _secrets_case(manager, ["registry-2025"])
    log = MagicMock(spec=logging.Logger)
    manager.ensure(svc, timeout=5, log=log, sole_user=lambda: alone)
    if not alone:
        apps.patch_namespaced_deployment.assert_not_called()
        assert "its image pull secrets changed; they are rolled out" in log.warning.call_args.args[0]
        return
    name, namespace, patch = apps.patch_namespaced_deployment.call_args.args
    assert (name, namespace) == ("clara-svc-0123456789ab", "radiology")
    assert patch[0] == {"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": "registry-2026"}]}
    wanted = manager.deployment(svc).metadata.annotations
    assert patch[1]["value"]["clara-airflow/spec-hash"] == wanted["clara-airflow/spec-hash"]
    log.warning.assert_not_called()


def test_another_configuration_is_never_rolled_out_even_when_alone(manager: KubernetesServiceManager) -> None:
    import dataclasses

    apps, _ = _secrets_case(manager, ["registry-2026"])
    other = dataclasses.replace(SVC, pull_secrets=("registry-2026",), requests=dataclasses.replace(
        SVC.requests, memory=SVC.requests.memory * 2))
    log = MagicMock(spec=logging.Logger)
    manager.ensure(other, timeout=5, log=log, sole_user=lambda: True)
    apps.patch_namespaced_deployment.assert_not_called()
    assert "runs with another configuration" in log.warning.call_args.args[0]


def test_a_rollout_under_way_is_not_ready_though_the_old_pod_is(manager: KubernetesServiceManager) -> None:
    rolling = _found({}, ready=1)
    rolling.metadata.generation, rolling.status.observed_generation = 3, 2
    done = _found({}, ready=1)
    done.metadata.generation, done.status.observed_generation = 3, 3
    manager.hook.apps_v1_client.read_namespaced_deployment.side_effect = [rolling, rolling, done]
    manager.hook.core_v1_client.list_namespaced_event.return_value = k8s.CoreV1EventList(items=[])
    manager.POLL = 0.01
    manager.ensure(SVC, timeout=5, log=logging.getLogger("t"))
    assert manager.hook.apps_v1_client.read_namespaced_deployment.call_count == 3
