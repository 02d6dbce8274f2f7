"""Everything the Kubernetes backend sends would be admitted by a real API server with Pod Security
"restricted" enforced: every example's step pods and every service Deployment, checked with the same
rules the fake cluster enforces (tests/kube/admission.py). Names and label values are valid by
construction, for any name the format allows (property tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clara_airflow.backends.kubernetes_steps import label_value, pod_name
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.settings import Options
from clara_airflow.spec.defaults import pipeline_settings
from clara_airflow.spec.load import load_pipeline
from tests.helpers import VALID
from tests.kube.admission import DNS_LABEL, LABEL_VALUE, problems_of, restricted_problems
from tests.unit.backends.test_kubernetes_specs import OPTIONS, SETTINGS, pods_of

NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,250}", fullmatch=True)


def api_json(obj: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return dict(ApiClient().sanitize_for_serialization(obj))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_step_pod_is_admitted_under_restricted(path: Path, airflow_db: None) -> None:
    from clara_airflow.dag import build_dag

    plan = compile_pipeline(load_pipeline(path), SETTINGS)
    dag = build_dag(plan, OPTIONS)
    for step in plan.steps:
        task = dag.get_task(step.name)
        task.prepare({"params": {"clara_payload": "/incoming/study-0001", **dict(plan.parameters)},
                      "ti": _TI(), "dag": dag, "run_id": "manual__2026-12-04T10:00:00+00:00"})
        pod = api_json(task.build_pod_request_obj(dry_run=True))
        assert problems_of("pods", pod, restricted=True) == [], step.name


@pytest.mark.parametrize("path", [p for p in VALID if compile_pipeline(load_pipeline(p)).services],
                         ids=lambda p: p.name)
def test_every_service_deployment_is_admitted_under_restricted(path: Path) -> None:
    from clara_airflow.backends.kubernetes import KubernetesServiceManager

    manager = KubernetesServiceManager(Options(pipeline_settings(SETTINGS), OPTIONS))
    for svc in compile_pipeline(load_pipeline(path), SETTINGS).services:
        assert problems_of("deployments", api_json(manager.deployment(svc)), restricted=True) == []
        assert problems_of("services", api_json(manager.service(svc)), restricted=False) == []
        for _, volume in svc.volumes:
            assert problems_of("persistentvolumeclaims", api_json(manager.claim(svc.id, volume)), False) == []


def test_host_paths_are_what_restricted_refuses(airflow_db: None) -> None:
    pods = pods_of(VALID[0], {**SETTINGS, "payload.claim": None, "allow_host_paths": True})
    (pod,) = pods.values()
    assert restricted_problems(_camel(pod["spec"]))  # the checker sees it: node paths need a privileged namespace


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_key(k): _camel(v) for k, v in value.items()}
    return [_camel(v) for v in value] if isinstance(value, list) else value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


class _TI:
    def xcom_pull(self, task_ids: str, key: str) -> dict[str, Any]:
        sid = task_ids.rsplit("_", 1)[-1]
        return {"id": sid, "connections": {"NVIDIA_CLARA_TRTISURI": f"clara-svc-{sid}.radiology.svc:8000",
                                           "MODEL_STORE_PATH": "/clara/common/models"}}


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_any_operator_name_gives_a_valid_pod_name_and_label(name: str) -> None:
    assert DNS_LABEL.fullmatch(pod_name(name)) and len(pod_name(name)) <= 50
    value = label_value(name)
    assert LABEL_VALUE.fullmatch(value) and 0 < len(value) <= 63


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_any_text_gives_a_valid_label_value_and_distinct_texts_stay_distinct(text: str) -> None:
    value = label_value(text)
    assert LABEL_VALUE.fullmatch(value) and len(value) <= 63
    assert label_value(text + "x") != value or (text + "x") == value


@pytest.mark.parametrize("name", ["_", "-", "__", "-_-", "a_", "_a"])
def test_names_of_only_punctuation_are_valid(name: str) -> None:
    assert LABEL_VALUE.fullmatch(label_value(name)) and label_value(name)
    assert DNS_LABEL.fullmatch(pod_name(name))


def _ok_container(name: str = "c", **ctx: Any) -> dict[str, Any]:
    return {"name": name, "image": "i", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}, **ctx}}


# Cases after upstream pod-security-admission's policy checks (k8s.io/pod-security-admission/policy,
# check_*.go): each a pod spec change from a compliant pod, and whether "restricted" admits it.
UPSTREAM_CASES = [
    ("compliant", {}, True),
    ("ephemeral container privileged", {"ephemeralContainers": [_ok_container("debug", privileged=True)]}, False),
    ("ephemeral container without runAsNonRoot", {"ephemeralContainers": [
        {"name": "debug", "image": "i", "securityContext": {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}}]}, False),
    ("pod runAsNonRoot false, containers true", {"securityContext": {"runAsNonRoot": False,
                                                                     "seccompProfile": {"type": "RuntimeDefault"}}}, False),
    ("pod runAsNonRoot true covers containers", {"securityContext": {"runAsNonRoot": True}, "containers": [
        {"name": "c", "image": "i", "securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]},
                                                        "seccompProfile": {"type": "RuntimeDefault"}}}]}, True),
    ("container runAsNonRoot false overrides pod true", {"securityContext": {"runAsNonRoot": True}, "containers": [
        _ok_container(runAsNonRoot=False)]}, False),
    ("pod runAsUser 0", {"securityContext": {"runAsUser": 0}}, False),
    ("pod runAsUser 1000", {"securityContext": {"runAsUser": 1000}}, True),
    ("seccomp Localhost", {"containers": [_ok_container(seccompProfile={"type": "Localhost",
                                                                         "localhostProfile": "p.json"})]}, True),
    ("seccomp Unconfined at pod, RuntimeDefault in container", {"securityContext": {
        "seccompProfile": {"type": "Unconfined"}}}, False),
    ("add NET_BIND_SERVICE", {"containers": [_ok_container(capabilities={"drop": ["ALL"],
                                                                         "add": ["NET_BIND_SERVICE"]})]}, True),
    ("add CHOWN (baseline allows, restricted not)", {"containers": [_ok_container(
        capabilities={"drop": ["ALL"], "add": ["CHOWN"]})]}, False),
    ("hostPort", {"containers": [{**_ok_container(), "ports": [{"containerPort": 80, "hostPort": 8080}]}]}, False),
    ("procMount Unmasked", {"containers": [_ok_container(procMount="Unmasked")]}, False),
    ("safe sysctl", {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}}, True),
    ("unsafe sysctl", {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, False),
    ("SELinux container_t", {"containers": [_ok_container(seLinuxOptions={"type": "container_t"})]}, True),
    ("SELinux custom type", {"containers": [_ok_container(seLinuxOptions={"type": "spc_t"})]}, False),
    ("SELinux user set", {"securityContext": {"seLinuxOptions": {"user": "system_u"}}}, False),
    ("AppArmor Unconfined field", {"containers": [_ok_container(appArmorProfile={"type": "Unconfined"})]}, False),
    ("AppArmor RuntimeDefault field", {"containers": [_ok_container(appArmorProfile={"type": "RuntimeDefault"})]}, True),
    ("windows hostProcess", {"securityContext": {"windowsOptions": {"hostProcess": True}}}, False),
    ("hostNetwork", {"hostNetwork": True}, False),
    ("hostPath volume", {"volumes": [{"name": "v", "hostPath": {"path": "/"}}]}, False),
    ("emptyDir volume", {"volumes": [{"name": "v", "emptyDir": {}}]}, True),
    ("init container escalates", {"initContainers": [_ok_container("init", allowPrivilegeEscalation=True)]}, False),
]


@pytest.mark.parametrize(("change", "admitted"), [(c[1], c[2]) for c in UPSTREAM_CASES],
                         ids=[c[0] for c in UPSTREAM_CASES])
def test_the_admission_checker_agrees_with_upstream_cases(change: dict[str, Any], admitted: bool) -> None:
    spec = {"containers": [_ok_container()], **change}
    assert (restricted_problems(spec) == []) is admitted, restricted_problems(spec)


def test_apparmor_annotations_are_checked_as_baseline_does() -> None:
    spec = {"containers": [_ok_container()]}
    key = "container.apparmor.security.beta.kubernetes.io/c"
    assert restricted_problems(spec, {key: "runtime/default"}) == []
    assert restricted_problems(spec, {key: "localhost/my-profile"}) == []
    assert restricted_problems(spec, {key: "unconfined"}) == [f"AppArmor profile: annotation {key}=unconfined"]
