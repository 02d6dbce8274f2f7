"""The Kubernetes backend end to end without a cluster: the real KubernetesPodOperator and the
Kubernetes service manager against kmock's API and a fake kubelet running pods as Docker containers."""

from __future__ import annotations

import logging
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

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker, pytest.mark.slow]
DAG_ID = "it-kube-shared"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: Any) -> Iterator[Any]:
    from tests.kube.cluster import FakeCluster
    from tests.kube.kubelet import FakeKubelet

    folder = tmp_path_factory.mktemp("kube")
    with FakeCluster(folder) as fake, FakeKubelet(fake.kubeconfig, TEST_NETWORK, folder / "claims", fake.logs):
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


def deployments(cluster: Any, namespace: str = "clara-e2e") -> list[Any]:
    from kubernetes import client, config

    api = client.AppsV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    return list(api.list_namespaced_deployment(namespace).items)


def test_pipeline_with_a_shared_service_runs_through_pods(kube_env: Any, airflow_db: None) -> None:
    from airflow.dag_processing.dagbag import DagBag

    (svc,) = compile_pipeline(load_pipeline(DAGS / f"{DAG_ID}.yaml")).services
    dag = DagBag(dag_folder=str(DAGS)).dags[DAG_ID]  # parsed with the cluster's [clara] options, as a worker would
    first = dag.test(run_conf={"clara_payload": "/incoming/study-1"})
    assert first.state == "success", {ti.task_id: ti.state for ti in first.get_task_instances()}
    run_dir = kube_env.claims / "clara-data" / "out" / DAG_ID / run_folder_name(first.run_id)
    expected = f"clara-svc-{svc.id}.clara-e2e.svc.cluster.local:8087"
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

    second = dag.test(run_conf={"clara_payload": "/incoming/study-2"})
    assert second.state == "success"
    (again,) = deployments(kube_env)
    assert again.metadata.uid == deployment.metadata.uid  # reused, not re-created


def test_a_failing_pod_reports_its_output(kube_env: Any, airflow_db: None, capfd: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).dags["it-kube-fail"]
    run = dag.test(run_conf={"clara_payload": "/incoming/study-3"})
    assert run.state == "failed"
    out, err = capfd.readouterr()
    assert "operator 'breaks' (clara-airflow/busybox:1) failed" in out + err
    start = (out + err).find("last pod output")
    assert "--- last pod output ---\nkube-failure-marker-7" in out + err, (out + err)[start - 300:start + 400]


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
    assert {r.host for r in results} == {f"clara-svc-{token}.clara-race.svc.cluster.local"}
    assert [d.metadata.name for d in deployments(kube_env, "clara-race")] == [f"clara-svc-{token}"]
    manager = KubernetesServiceManager(options)
    assert manager.status(token) == "running"
    manager.apps.patch_namespaced_deployment(f"clara-svc-{token}", "clara-race", {"spec": {"replicas": 0}})
    assert manager.status(token) == "scaled to 0"
    repaired = manager.ensure(svc, timeout=60, log=logging.getLogger("repair"))
    assert not repaired.created and manager.status(token) == "running"
    assert manager.stop(token) and manager.status(token) == "missing"
