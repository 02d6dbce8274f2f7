"""Golden tests of what the Kubernetes backend sends to a cluster: every example's pods, and the
Deployment, Service and claims of service identities. No cluster is needed.

Regenerate after an intended change with CLARA_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.settings import Deployment, Options
from clara_airflow.spec.defaults import pipeline_settings
from clara_airflow.spec.load import load_pipeline
from tests.helpers import REPO, VALID

GOLDEN = REPO / "tests" / "fixtures" / "golden" / "kubernetes"
RUN_ID = "scheduled__2026-11-24T02:00:00+00:00"
SETTINGS = {"backend": "kubernetes", "namespace": "radiology", "payload.output_root": "/clara/out",
            "payload.claim": "clara-data"}
OPTIONS = Deployment(payload_root="/incoming", service_account="clara-runner",
                     gpu_node_selector={"nvidia.com/gpu.present": "true"},
                     tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))


RESTRICTED_CONTAINER = {"allow_privilege_escalation": False, "privileged": False, "run_as_non_root": True,
                        "capabilities": {"drop": ["ALL"]}, "seccomp_profile": {"type": "RuntimeDefault"}}
RESTRICTED_POD = {"run_as_non_root": True, "seccomp_profile": {"type": "RuntimeDefault"}}
# no fsGroup on step pods of the payload claim: a kubelet would re-own the patient data at the first mount
WITH_FS_GROUP = {"fs_group_change_policy": "OnRootMismatch"}


def compact(value: Any) -> Any:
    """Drop nulls and empty containers, so goldens hold only what is set."""
    if isinstance(value, dict):
        pairs = ((k, compact(v)) for k, v in value.items())
        return {k: v for k, v in pairs if v not in (None, {}, [])}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class FakeTI:
    def xcom_pull(self, task_ids: str, key: str) -> dict[str, Any]:
        sid = task_ids.rsplit("_", 1)[-1]
        host = f"clara-svc-{sid}.radiology.svc"
        return {"id": sid, "connections": {"NVIDIA_CLARA_TRTISURI": f"{host}:8000",
                                           "MODEL_STORE_PATH": "/clara/common/models"}}


def pods_of(path: Path, settings: dict[str, Any], options: Deployment = OPTIONS) -> dict[str, Any]:
    from clara_airflow.dag import build_dag

    plan = compile_pipeline(load_pipeline(path), settings)
    dag = build_dag(plan, options)
    pods = {}
    for step in plan.steps:
        task = dag.get_task(step.name)
        task.prepare({"params": {"clara_payload": "/incoming/study-0001", **dict(plan.parameters)},
                      "ti": FakeTI(), "dag": dag, "run_id": RUN_ID})
        pod = compact(task.build_pod_request_obj(dry_run=True).to_dict())
        pod["metadata"]["name"] = pod["metadata"]["name"].rsplit("-", 1)[0]  # drop the random suffix
        if "airflow_version" in pod["metadata"].get("labels", {}):  # the provider stamps the running release
            pod["metadata"]["labels"]["airflow_version"] = "<airflow version>"
        pods[step.name] = pod
    return pods


def check_golden(name: str, data: Any) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    if os.environ.get("CLARA_UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert path.is_file(), f"no golden {path.name}; run with CLARA_UPDATE_GOLDENS=1 and review it"
    assert json.loads(text) == json.loads(path.read_text())


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_pod_specs_match_goldens(path: Path, airflow_db: None) -> None:
    check_golden(f"pods-{path.stem}", pods_of(path, SETTINGS))


def test_pods_without_a_claim_use_node_paths(airflow_db: None) -> None:
    path = next(p for p in VALID if p.name.startswith("02-"))
    check_golden("pods-02-node-paths", pods_of(path, {**SETTINGS, "payload.claim": None, "allow_host_paths": True}))


def test_node_paths_on_kubernetes_need_allow_host_paths() -> None:
    from clara_airflow.errors import SpecError

    with pytest.raises(SpecError, match="set payload.claim .* node folders \\(hostPath\\) need allow_host_paths"):
        compile_pipeline(load_pipeline(VALID[0]), {**SETTINGS, "payload.claim": None})


def test_pod_spec_contract(airflow_db: None) -> None:
    pods = pods_of(next(p for p in VALID if p.name.startswith("06-")), SETTINGS)
    pod = pods["nodule-seg"]
    spec = pod["spec"]
    (main,) = spec["containers"]
    assert main["image"] == "example/nodule-seg:1.0"
    assert "command" not in main  # Clara's command is the args; the image's entrypoint stays
    assert {e["name"] for e in main["env"]} == {"NVIDIA_CLARA_TRTISURI", "MODEL_STORE_PATH"}
    assert main["env"][0]["value"].endswith(".radiology.svc:8000")
    assert main["resources"]["limits"] == {"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": "1"}
    assert main["resources"]["requests"] == main["resources"]["limits"]
    mounts = {m["mount_path"]: m for m in main["volume_mounts"]}
    assert mounts["/input"]["read_only"] is True
    assert mounts["/input"]["sub_path"] == "clara/out/lung-nodule-pipeline/scheduled__2026-11-24T02_00_00_00_00/series-reader"
    assert mounts["/output"]["sub_path"].endswith("/nodule-seg/segmentation") and not mounts["/output"].get("read_only")
    assert spec["image_pull_secrets"] == [{"name": "my-registry-secret"}]
    assert spec["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["service_account_name"] == "clara-runner"
    assert main["security_context"] == RESTRICTED_CONTAINER
    assert spec["security_context"] == {**RESTRICTED_POD, "run_as_user": 1000, "run_as_group": 1000}
    assert spec["automount_service_account_token"] is False
    assert main["termination_message_policy"] == "FallbackToLogsOnError"
    assert pod["metadata"]["labels"]["clara-airflow/operator"] == "nodule-seg"
    assert pod["metadata"]["namespace"] == "radiology"
    (init,) = spec["init_containers"]
    assert {e["name"]: e["value"] for e in init["env"]}["CLARA_RUN_ID"] == RUN_ID
    assert init["security_context"] == RESTRICTED_CONTAINER and "chown" not in init["command"][-1]
    assert init["termination_message_policy"] == "FallbackToLogsOnError"
    reader = pods["series-reader"]["spec"]["containers"][0]
    assert {m["mount_path"]: m["sub_path"] for m in reader["volume_mounts"]}["/input"] == "incoming/study-0001"
    assert pods["series-reader"]["spec"].get("node_selector") is None


def test_dollar_references_are_left_for_kubernetes(airflow_db: None) -> None:
    pods = pods_of(next(p for p in VALID if p.name.startswith("08-")), SETTINGS)
    args = pods["overlap"]["spec"]["containers"][0]["args"]
    assert args == ["/bin/sh", "-c", "overlap.sh -i /input -o /overlaps/overlaps.paf -t 16"]
    assert pods["overlap"]["spec"]["containers"][0]["image"] == "example/assembly-tools:2.0"


@pytest.mark.parametrize("prefix", ["04-", "06-"])
def test_service_objects_match_goldens(prefix: str) -> None:
    from clara_airflow.backends.kubernetes import KubernetesServiceManager

    path = next(p for p in VALID if p.name.startswith(prefix))
    (svc,) = compile_pipeline(load_pipeline(path), SETTINGS).services
    manager = KubernetesServiceManager(Options(pipeline_settings(SETTINGS), OPTIONS))
    objects = compact({"deployment": manager.deployment(svc).to_dict(), "service": manager.service(svc).to_dict(),
                       "claims": [manager.claim(svc.id, p).to_dict() for _, p in svc.volumes]})
    check_golden(f"service-{path.stem}", objects)
    deployment = objects["deployment"]
    assert deployment["metadata"]["name"] == f"clara-svc-{svc.id}"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == list(svc.command) and container.get("command") is None
    assert container["readiness_probe"]["tcp_socket"]["port"] == 8000
    assert container["security_context"] == RESTRICTED_CONTAINER
    pod = deployment["spec"]["template"]["spec"]
    assert pod["security_context"] == {**RESTRICTED_POD, **WITH_FS_GROUP, "run_as_user": 1000, "run_as_group": 1000,
                                       "fs_group": 1000}, "service claims are ours, not patient data: fsGroup stays"
    assert pod["automount_service_account_token"] is False
    assert pod.get("image_pull_secrets", []) == [{"name": s} for s in svc.pull_secrets]
    assert pod["volumes"][0]["persistent_volume_claim"]["claim_name"] == "clara-service-data"
    assert deployment["metadata"]["annotations"]["clara-airflow/spec-hash"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {e["name"] for e in container["env"]} >= {"NVIDIA_CLARA_SERVICE_DATA_PATH"}
    assert [p["port"] for p in objects["service"]["spec"]["ports"]] == [8000]
    assert manager.host(svc.id) == f"clara-svc-{svc.id}.radiology.svc"


def test_step_user_runs_the_pod_as_that_user_and_group() -> None:
    pods = pods_of(VALID[0], SETTINGS, dataclasses.replace(OPTIONS, step_user="1001:2000"))
    (pod,) = pods.values()
    assert pod["spec"]["security_context"] == {**RESTRICTED_POD, "run_as_user": 1001, "run_as_group": 2000}
    (prepare,) = pod["spec"]["init_containers"]
    assert not any(e["name"] == "CLARA_OWNER" for e in prepare["env"]), "the init container runs as the step"


def test_root_is_refused_on_kubernetes() -> None:
    from clara_airflow.errors import ClaraAirflowError

    with pytest.raises(ClaraAirflowError, match="non-root user"):
        pods_of(VALID[0], SETTINGS, dataclasses.replace(OPTIONS, step_user="0"))


def test_step_user_worker_is_refused_on_kubernetes() -> None:
    from clara_airflow.errors import ClaraAirflowError

    with pytest.raises(ClaraAirflowError, match="'worker' is Docker only"):
        pods_of(VALID[0], SETTINGS, dataclasses.replace(OPTIONS, step_user="worker"))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_object_passes_the_api_schema_in_strict_mode(path: Path, airflow_db: None) -> None:
    """Every pod, Deployment, Service and claim of every example, against the OpenAPI schemas of
    Kubernetes 1.30 and 1.37 (kubernetes-validate, strict: an unknown or misspelt field fails)."""
    pytest.importorskip("kubernetes_validate")  # not in the Airflow-matrix environments
    from kubernetes.client import ApiClient

    from clara_airflow.backends.kubernetes import KubernetesServiceManager
    from clara_airflow.dag import build_dag
    from tests.kube.cluster import schema_problems

    plain = ApiClient().sanitize_for_serialization
    plan = compile_pipeline(load_pipeline(path), SETTINGS)
    dag = build_dag(plan, OPTIONS)
    problems = []
    for step in plan.steps:
        task = dag.get_task(step.name)
        task.prepare({"params": {"clara_payload": "/incoming/study-0001", **dict(plan.parameters)},
                      "ti": FakeTI(), "dag": dag, "run_id": RUN_ID})
        problems += schema_problems("pods", plain(task.build_pod_request_obj(dry_run=True)))
    manager = KubernetesServiceManager(Options(pipeline_settings(SETTINGS), OPTIONS))
    for svc in plan.services:
        problems += schema_problems("deployments", plain(manager.deployment(svc)))
        problems += schema_problems("services", plain(manager.service(svc)))
        problems += [p for _, v in svc.volumes for p in schema_problems("persistentvolumeclaims",
                                                                         plain(manager.claim(svc.id, v)))]
    problems += schema_problems("persistentvolumeclaims", plain(manager.data_claim()))
    assert problems == []
