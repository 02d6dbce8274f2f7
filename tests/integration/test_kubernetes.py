"""The Kubernetes backend end to end without a cluster: the real KubernetesPodOperator and the
Kubernetes service manager against kmock's API and a fake kubelet running pods as Docker containers."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clara_airflow.backends.kubernetes import KubernetesServiceManager
from clara_airflow.backends.layout import run_folder_name
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.spec.load import load_pipeline
from tests.conftest import DAGS, TEST_NETWORK
from tests.helpers import busybox_service, make_options
from tests.helpers import wait as wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker, pytest.mark.slow]
DAG_ID = "it-kube-shared"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: Any, airflow_db: None) -> Iterator[Any]:  # its teardown clears records
    from tests.kube.cluster import FakeCluster
    from tests.kube.kubelet import FakeKubelet

    folder = tmp_path_factory.mktemp("kube")
    data = folder / "claims" / "clara-data"  # the payload claim, its root prepared once as docs/kubernetes.md says
    data.mkdir(parents=True)
    os.chown(data, 0, 1000)
    data.chmod(0o2775)
    restricted = frozenset({"clara-e2e", "clara-race"})  # namespaces labelled pod-security.../enforce=restricted
    with FakeCluster(folder, restricted=tuple(restricted)) as fake, \
            FakeKubelet(fake.kubeconfig, TEST_NETWORK, folder / "claims", fake.logs, restricted):
        fake.claims = folder / "claims"
        yield fake
    from clara_airflow.services.records import clear_record, read_views

    for view in read_views():  # the fake cluster is gone: so are its services
        if view.record is not None and view.record.backend == "kubernetes":
            clear_record(view.id)


@pytest.fixture
def kube_env(cluster: Any, monkeypatch: Any) -> Any:
    monkeypatch.setenv("AIRFLOW__CLARA__KUBE_CONFIG_FILE", str(cluster.kubeconfig))
    monkeypatch.setenv("AIRFLOW__CLARA__INIT_IMAGE", "clara-airflow/busybox:1")
    monkeypatch.setenv("AIRFLOW__CLARA__PAYLOAD_ROOT", "/incoming")  # a path on the claim, checked as text
    return cluster


def payload(cluster: Any, study: str) -> str:
    """A study folder on the claim, as the hospital's transfer would leave it; the path the run gets."""
    (cluster.claims / "clara-data" / "incoming" / study).mkdir(parents=True, exist_ok=True)
    return f"/incoming/{study}"


def deployments(cluster: Any, namespace: str = "clara-e2e") -> list[Any]:
    from kubernetes import client, config

    api = client.AppsV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    return list(api.list_namespaced_deployment(namespace).items)


def test_pipeline_with_a_shared_service_runs_through_pods(kube_env: Any, airflow_db: None) -> None:
    from clara_airflow.airflow_compat import dagbag

    (svc,) = compile_pipeline(load_pipeline(DAGS / f"{DAG_ID}.yaml")).services
    dag = dagbag(dag_folder=str(DAGS)).dags[DAG_ID]  # parsed with the cluster's [clara] options, as a worker would
    first = dag.test(run_conf={"clara_payload": payload(kube_env, "study-1")})
    assert first.state == "success", {ti.task_id: ti.state for ti in first.get_task_instances()}
    run_dir = kube_env.claims / "clara-data" / "out" / DAG_ID / run_folder_name(first.run_id)
    expected = f"clara-svc-{svc.id}.clara-e2e.svc:8087"
    assert (run_dir / "ask-one" / "uri").read_text().strip() == expected
    assert (run_dir / "ask-two" / "uri").read_text().strip() == expected
    assert (run_dir / "ask-two" / "first-uri").read_text().strip() == expected  # upstream output mounted
    for step in ("ask-one", "ask-two"):
        assert "kube-service-ok" in (run_dir / step / "answer").read_text()
    assert (run_dir / ".clara-run-id").read_text() == first.run_id
    (deployment,) = deployments(kube_env)
    assert deployment.metadata.name == f"clara-svc-{svc.id}"
    from clara_airflow.services.records import BadRecord, read_record

    record = read_record(svc.id)
    assert record is not None and not isinstance(record, BadRecord) and record.backend == "kubernetes"
    assert record.location["namespace"] == "clara-e2e" and record.host == expected.rsplit(":", 1)[0]

    second = dag.test(run_conf={"clara_payload": payload(kube_env, "study-2")})
    assert second.state == "success"
    (again,) = deployments(kube_env)
    assert again.metadata.uid == deployment.metadata.uid  # reused, not re-created


def test_a_failing_pod_reports_its_output(kube_env: Any, airflow_db: None, capfd: Any) -> None:
    from clara_airflow.airflow_compat import dagbag

    dag = dagbag(dag_folder=str(DAGS)).dags["it-kube-fail"]
    run = dag.test(run_conf={"clara_payload": payload(kube_env, "study-3")})
    assert run.state == "failed"
    out, err = capfd.readouterr()
    assert "operator 'breaks' (clara-airflow/busybox:1) failed" in out + err
    start = (out + err).find("last pod output")
    assert "--- last pod output ---\nkube-failure-marker-7" in out + err, (out + err)[start - 300:start + 400]


def test_a_missing_payload_fails_in_the_init_container_and_says_so(kube_env: Any, airflow_db: None,
                                                                   capfd: Any) -> None:
    from clara_airflow.airflow_compat import dagbag

    dag = dagbag(dag_folder=str(DAGS)).dags[DAG_ID]
    run = dag.test(run_conf={"clara_payload": "/incoming/never-arrived"})
    assert run.state == "failed"
    out, err = capfd.readouterr()
    assert "--- init container clara-prepare-output failed (exit code 2) ---" in out + err
    assert "input payload /incoming/never-arrived is not a folder on the claim clara-data" in out + err
    assert not (kube_env.claims / "clara-data" / "incoming" / "never-arrived").exists(), "no empty folder is left"


def test_a_deployment_that_restricted_refuses_is_reported_at_once(kube_env: Any) -> None:
    import dataclasses
    import time

    from clara_airflow.errors import ServiceError

    token = uuid.uuid4().hex[:12]
    svc = dataclasses.replace(busybox_service(token, "exec httpd -f -p 8089 -h /", 8089, "hosty"),
                              host_mounts=(("/srv/models", "/srv/models"),))
    manager = KubernetesServiceManager(make_options({"namespace": "clara-race",
                                                     "kube_config_file": str(kube_env.kubeconfig)}))
    began = time.monotonic()
    with pytest.raises(ServiceError, match="cannot create a pod: FailedCreate: .*violates PodSecurity.*hostPath"):
        manager.ensure(svc, timeout=60, log=logging.getLogger("refused"))
    assert time.monotonic() - began < 20, "reported from the Deployment's condition, not after the start timeout"
    manager.stop(token)


def test_the_fake_api_refuses_what_a_real_one_refuses(kube_env: Any) -> None:
    """Pinned: the fake's admission once compared kmock's resource repr with "pods" and refused nothing."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(config.new_client_from_config(str(kube_env.kubeconfig)))
    container = {"name": "c", "image": "clara-airflow/busybox:1", "securityContext": {"privileged": True}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("clara-e2e", {"metadata": {"name": "privileged"}, "spec": {"containers": [container]}})
    assert refused.value.status == 403 and 'violates PodSecurity' in str(refused.value.body)
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_pod("clara-e2e", {"metadata": {"name": "Not_A_Name"}, "spec": {"containers": [
            {"name": "c", "image": "clara-airflow/busybox:1"}]}})
    assert invalid.value.status == 422
    misspelt = {"name": "c", "image": "clara-airflow/busybox:1", "imagePulPolicy": "Never"}
    with pytest.raises(ApiException) as unknown:
        core.create_namespaced_pod("default", {"metadata": {"name": "misspelt"}, "spec": {"containers": [misspelt]}})
    assert unknown.value.status == 422 and "'imagePulPolicy' was unexpected" in str(unknown.value.body)


def test_a_claim_that_never_gets_fsgroup_fails_with_the_fix_and_runs_once_prepared(kube_env: Any, airflow_db: None,
                                                                                      capfd: Any) -> None:
    import os

    from clara_airflow.airflow_compat import dagbag

    root = kube_env.claims / "nfs-data"
    root.mkdir(mode=0o755, parents=True)  # root:root 0755, as an NFS export's root
    (root / "incoming" / "study-nfs").mkdir(parents=True)
    dag = dagbag(dag_folder=str(DAGS)).dags["it-kube-nfs"]
    first = dag.test(run_conf={"clara_payload": "/incoming/study-nfs"})
    assert first.state == "failed"
    out, err = capfd.readouterr()
    assert "make the claim's root group-owned by 1000, group-writable and setgid, once" in out + err
    os.chown(root, 0, 1000)  # the admin job of docs/kubernetes.md, 'Storage'
    root.chmod(0o2775)
    second = dag.test(run_conf={"clara_payload": "/incoming/study-nfs"})
    assert second.state == "success"
    (result,) = root.glob("out/it-kube-nfs/*/write/result")
    assert result.read_text() == "written\n" and root.stat().st_gid == 1000


def test_a_step_whose_claim_cannot_be_provisioned_fails_with_the_claims_event(kube_env: Any, airflow_db: None,
                                                                               capfd: Any) -> None:
    from kubernetes import client, config

    from clara_airflow.airflow_compat import dagbag

    core = client.CoreV1Api(config.new_client_from_config(str(kube_env.kubeconfig)))
    core.create_namespaced_persistent_volume_claim("clara-e2e-ebs", {"metadata": {"name": "ebs-data"}, "spec": {
        "accessModes": ["ReadWriteMany"], "storageClassName": "ebs-sc", "resources": {"requests": {"storage": "1Gi"}}}})
    run = dagbag(dag_folder=str(DAGS)).dags["it-kube-ebs"].test(run_conf={"clara_payload": "/incoming/x"})
    assert run.state == "failed"
    out, err = capfd.readouterr()
    assert "--- warnings about its claims ---\nclaim ebs-data: ProvisioningFailed: failed to provision volume with " \
           'StorageClass "ebs-sc"' in out + err


def test_a_crash_looping_service_fails_the_ensure_at_once_with_its_log(kube_env: Any) -> None:
    import time

    from clara_airflow.errors import ServiceError

    token = uuid.uuid4().hex[:12]
    svc = busybox_service(token, "echo model repository /models/x not found >&2; exit 1", 8085, "crashy")
    manager = KubernetesServiceManager(make_options({"namespace": "clara-e2e", "kube_config_file": str(kube_env.kubeconfig)}))
    began = time.monotonic()
    with pytest.raises(ServiceError, match=r"cannot start: pod clara-svc-\w+-fake is CrashLoopBackOff") as info:
        manager.ensure(svc, timeout=120, log=logging.getLogger("crashy"))
    assert time.monotonic() - began < 30, "reported from the pod's state, not after the start timeout"
    assert "model repository /models/x not found" in info.value.logs
    manager.stop(token)
    wait_for(lambda: not any(p.metadata.name.startswith(f"clara-svc-{token}") for p in _pods(kube_env, "clara-e2e")),
             30, "the Deployment's pod object outlived it")


def _pods(cluster: Any, namespace: str) -> list[Any]:
    from kubernetes import client, config

    return list(client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig))).list_namespaced_pod(
        namespace).items)


def test_a_claim_its_provisioner_refuses_fails_the_ensure_at_once_with_the_event(kube_env: Any) -> None:
    import time

    from clara_airflow.errors import ServiceError

    token = uuid.uuid4().hex[:12]
    svc = busybox_service(token, "exec httpd -f -p 8087 -h /", 8087, "claimed")
    manager = KubernetesServiceManager(make_options({"namespace": "clara-ebs", "storage_class": "ebs-sc",
                                                     "kube_config_file": str(kube_env.kubeconfig)}))
    began = time.monotonic()
    with pytest.raises(ServiceError, match=r"cannot start: claim clara-service-data cannot be provisioned: failed to "
                                           r'provision volume with StorageClass "ebs-sc": .*supports only ReadWriteOnce'):
        manager.ensure(svc, timeout=120, log=logging.getLogger("claims"))
    assert time.monotonic() - began < 20, "reported from the claim's event, not after the start timeout"
    manager.stop(token)


def test_readwritemany_of_a_readwriteonce_only_default_class_is_refused_before_any_claim(kube_env: Any,
                                                                                        airflow_db: None) -> None:
    from kubernetes import client, config

    from clara_airflow.errors import ServiceError

    api = config.new_client_from_config(str(kube_env.kubeconfig))
    storage, core = client.StorageV1Api(api), client.CoreV1Api(api)
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {
        "name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "ebs.csi.aws.com"})
    try:
        token = uuid.uuid4().hex[:12]
        options = {"namespace": "clara-store", "kube_config_file": str(kube_env.kubeconfig)}
        manager = KubernetesServiceManager(make_options(options))
        with pytest.raises(ServiceError, match=r"storage class gp3 \(the cluster's default\) is provisioned by "
                                               r"ebs.csi.aws.com, which offers ReadWriteOnce only"):
            manager.ensure(busybox_service(token, "exec httpd -f -p 8086 -h /", 8086, "gp3"), timeout=60,
                           log=logging.getLogger("gp3"))
        assert core.list_namespaced_persistent_volume_claim("clara-store").items == [], "refused before any claim"
        single = KubernetesServiceManager(make_options({**options, "service_data_access_mode": "ReadWriteOnce"}))
        found = single.ensure(busybox_service(token, "exec httpd -f -p 8086 -h /", 8086, "gp3"), timeout=60,
                              log=logging.getLogger("gp3"))
        assert found.created, "a single-node setting (ReadWriteOnce) passes the check"
        single.stop(token)
    finally:
        storage.delete_storage_class("gp3")


def test_concurrent_ensures_create_one_deployment(kube_env: Any) -> None:
    token = uuid.uuid4().hex[:12]
    svc = busybox_service(token, "exec httpd -f -p 8088 -h /", 8088, "race")
    options = make_options({"namespace": "clara-race", "kube_config_file": str(kube_env.kubeconfig)})
    results: list[Any] = []

    def ensure() -> None:
        results.append(KubernetesServiceManager(options).ensure(svc, timeout=60, log=logging.getLogger("race")))

    threads = [threading.Thread(target=ensure) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert sum(r.created for r in results) == 1
    assert {r.host for r in results} == {f"clara-svc-{token}.clara-race.svc"}
    assert [d.metadata.name for d in deployments(kube_env, "clara-race")] == [f"clara-svc-{token}"]
    manager = KubernetesServiceManager(options)
    assert manager.status(token) == "running"
    manager.apps.patch_namespaced_deployment(f"clara-svc-{token}", "clara-race", {"spec": {"replicas": 0}})
    assert manager.status(token) == "scaled to 0"
    repaired = manager.ensure(svc, timeout=60, log=logging.getLogger("repair"))
    assert not repaired.created and manager.status(token) == "running"
    assert manager.stop(token) and manager.status(token) == "missing"


def pods_left(cluster: Any, namespace: str) -> list[str]:
    """Pods of ``namespace`` that are not gone (any phase), as name:phase."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    return [f"{p.metadata.name}:{p.status.phase}" for p in api.list_namespaced_pod(namespace).items]


def running_pod(cluster: Any, namespace: str) -> bool:
    return any(p.endswith(":Running") for p in pods_left(cluster, namespace))


def test_a_step_that_times_out_fails_and_leaves_no_pod_running(kube_env: Any, airflow_db: None, capfd: Any) -> None:
    """x-airflow timeout 20 s, a step that sleeps 600 s: the pod carries activeDeadlineSeconds, and the
    task's timeout deletes it (the provider's own cleanup raises first and would leave it running)."""
    from clara_airflow.airflow_compat import dagbag

    dag = dagbag(dag_folder=str(DAGS)).dags["it-kube-slow"]
    assert dag.get_task("slow").active_deadline_seconds == 20 + 60
    run = dag.test(run_conf={"clara_payload": payload(kube_env, "study-slow")})
    assert run.state == "failed"
    wait_for(lambda: not any(":Running" in p or ":Pending" in p for p in pods_left(kube_env, "clara-e2e-slow")), 60,
             f"the timed-out step's pod is still running: {pods_left(kube_env, 'clara-e2e-slow')}")
    out, err = capfd.readouterr()
    assert "deleting pod" in out + err and "its task did not end normally" in out + err


def test_a_step_stopped_with_sigterm_fails_and_leaves_no_pod(kube_env: Any, airflow_db: None, capfd: Any) -> None:
    """The worker is shut down (SIGTERM) while the step's pod runs: the task runner calls on_kill, which
    deletes the pod; the task must fail, not succeed on partial output."""
    import os
    import signal
    import time

    from clara_airflow.airflow_compat import dagbag

    dag = dagbag(dag_folder=str(DAGS)).dags["it-kube-stop"]
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the task runner installs its own while it runs

    def stop_when_running() -> None:
        wait_for(lambda: running_pod(kube_env, "clara-e2e-stop"), 60, "the step's pod never ran")
        time.sleep(8)  # the operator is past the pod's start and follows its log: where #73006 strikes
        os.kill(os.getpid(), signal.SIGTERM)

    began = time.monotonic()
    threading.Thread(target=stop_when_running, daemon=True).start()
    try:
        run = dag.test(run_conf={"clara_payload": payload(kube_env, "study-sigterm")})
    finally:
        signal.signal(signal.SIGTERM, previous)
    out, err = capfd.readouterr()
    assert run.state == "failed", "a step stopped by SIGTERM was recorded as a success"
    assert "was stopped (SIGTERM" in out + err
    assert time.monotonic() - began < 300, "failed by the SIGTERM, not by the step timeout (600 s)"
    wait_for(lambda: not any(":Running" in p or ":Pending" in p for p in pods_left(kube_env, "clara-e2e-stop")), 60,
             "the stopped step's pod is still running")


def test_the_reaper_collects_step_pods_of_ended_runs_and_leaves_the_rest(kube_env: Any, monkeypatch: Any) -> None:
    """A step pod a dead worker left (its run gone or ended) is deleted after the grace, through the real
    API; a pod of a live run, a pod without clara-airflow's run annotations, and a young pod stay."""
    from kubernetes import client, config

    from clara_airflow.services import admin

    api = client.CoreV1Api(config.new_client_from_config(str(kube_env.kubeconfig)))
    namespace = "clara-e2e-reap"

    def make(name: str, annotations: dict[str, str] | None) -> None:
        api.create_namespaced_pod(namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"clara-airflow/operator": "seg"}, annotations=annotations),
            spec=client.V1PodSpec(containers=[client.V1Container(name="base", image="clara-airflow/busybox:1",
                                                                 args=["sleep", "600"])])))

    make("left-by-dead-worker", {"clara-airflow/dag-id": "p", "clara-airflow/run-id": "manual__ended"})
    make("still-running", {"clara-airflow/dag-id": "p", "clara-airflow/run-id": "manual__live"})
    make("not-annotated", None)
    monkeypatch.setenv("AIRFLOW__CLARA__NAMESPACE", namespace)
    monkeypatch.setenv("AIRFLOW__CLARA__BACKEND", "kubernetes")
    states = {"manual__ended": "failed", "manual__live": "running"}
    young = admin.collect_steps(grace=3600, state_of=lambda dag, run: states[run])
    assert not [line for line in young if "pod" in line or "left-by" in line]
    report = admin.collect_steps(grace=0, state_of=lambda dag, run: states[run])
    (removed,) = [line for line in report if "left-by-dead-worker" in line]
    assert removed.startswith("removed step container left-by-dead-worker (") and removed.endswith(
        ") of p/manual__ended (run failed)"), report
    assert not [line for line in report if "still-running" in line or "not-annotated" in line], report
    wait_for(lambda: "left-by-dead-worker" not in " ".join(pods_left(kube_env, namespace)), 60, "not deleted")
    assert sorted(p.split(":")[0] for p in pods_left(kube_env, namespace)) == ["not-annotated", "still-running"]
    for name in ("not-annotated", "still-running"):  # the fake kubelet stops their containers
        api.delete_namespaced_pod(name, namespace)
