"""Plans of the shared examples: edges, mounts, environment and service identities."""

from __future__ import annotations

import hashlib
import json

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.compiler.identity import service_id, volume_name
from clara_airflow.compiler.resolve import resolve_plan
from clara_airflow.errors import CompileError
from clara_airflow.spec.load import load_pipeline
from tests.helpers import EXAMPLES, VALID


def plan_of(prefix: str, deployment=None):  # type: ignore[no-untyped-def]
    path = next(p for p in VALID if p.name.startswith(prefix))
    return compile_pipeline(load_pipeline(path), deployment)


EDGES = {
    "01-": {"dicom-validator": ()},
    "02-": {"series-to-volume": (), "volume-denoise": ("series-to-volume",),
            "volume-to-series": ("volume-denoise",)},
    "03-": {"roi-cutter": (), "kidney-seg": ("roi-cutter",), "pancreas-seg": ("roi-cutter",),
            "mask-merger": ("roi-cutter", "kidney-seg", "pancreas-seg"), "register-for-viewer": ("mask-merger",)},
    "05-": {"series-reader": (), "liver-seg": ("series-reader",),
            "lesion-classifier": ("liver-seg", "series-reader"), "register-viewer": ("liver-seg",)},
    "07-": {"volume-loader": (), "volume-filter": ("volume-loader",),
            "volume-writer": ("volume-filter", "volume-loader")},
    "08-": {"overlap": (), "layout": ("overlap",), "polish": ("layout", "overlap")},
}


@pytest.mark.parametrize("prefix", sorted(EDGES))
def test_edges_and_topological_order(prefix: str) -> None:
    plan = plan_of(prefix)
    assert {s.name: s.upstream for s in plan.steps} == EDGES[prefix]
    seen: set[str] = set()
    for step in plan.steps:
        assert set(step.upstream) <= seen
        seen.add(step.name)


def test_service_id_is_the_spec_hash() -> None:
    text = json.dumps(["nvcr.io/nvidia/tensorrtserver", "19.08-py3",
                       ["trtserver", "--model-store=$(NVIDIA_CLARA_SERVICE_DATA_PATH)/models"]], separators=(",", ":"))
    assert service_id("nvcr.io/nvidia/tensorrtserver", "19.08-py3",
                      ["trtserver", "--model-store=$(NVIDIA_CLARA_SERVICE_DATA_PATH)/models"]
                      ) == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_shared_service_is_one_identity_for_two_operators() -> None:
    plan = plan_of("05-")
    assert len(plan.services) == 1
    svc = plan.services[0]
    assert svc.consumers == ("liver-seg", "lesion-classifier")
    assert svc.connections == {"NVIDIA_CLARA_TRTISURI": 8000}
    assert svc.requests.gpu == 1
    for name in svc.consumers:
        assert plan.step(name).env_names == ("NVIDIA_CLARA_TRTISURI",)
        assert plan.step(name).services[0].service == svc.id


def test_volume_connection_mount_and_env() -> None:
    plan = plan_of("06-")
    svc = plan.services[0]
    assert svc.connections == {"NVIDIA_CLARA_TRTISURI": 8000, "MODEL_STORE_PATH": "/clara/common/models"}
    step = plan.step("nodule-seg")
    assert set(step.env_names) == {"NVIDIA_CLARA_TRTISURI", "MODEL_STORE_PATH"}
    volume = [m for m in step.mounts if m.kind == "volume"]
    assert [(m.target, m.volume) for m in volume] == [
        ("/clara/common/models", volume_name(svc.id, "/clara/common/models"))]


def test_mounts_follow_the_payload_and_output_layout() -> None:
    plan = plan_of("03-")
    merger = plan.step("mask-merger")
    got = [(m.target, m.kind, m.read_only, m.operator, m.sub) for m in merger.mounts]
    assert got == [
        ("/app/in/config", "upstream", True, "roi-cutter", "roi-config"),
        ("/app/in/kidney", "upstream", True, "kidney-seg", "kidney-mask"),
        ("/app/in/pancreas", "upstream", True, "pancreas-seg", "pancreas-mask"),
        ("/app/out/merged", "output", False, "mask-merger", "merged"),
        ("/app/out/publish", "output", False, "mask-merger", "rendering"),
    ]
    cutter = plan.step("roi-cutter")
    assert cutter.mounts[0].kind == "payload" and cutter.mounts[0].read_only


def test_unnamed_output_is_the_operator_folder() -> None:
    plan = plan_of("02-")
    assert [(m.kind, m.sub) for m in plan.step("volume-denoise").mounts] == [
        ("upstream", ""), ("output", "volume"), ("output", "logs")]


def test_requests_defaults_come_from_x_airflow_then_deployment() -> None:
    plan = plan_of("02-", {"resources.memory": 2048, "resources.cpu": 2})
    assert plan.step("series-to-volume").requests.memory == 2048
    assert plan.step("series-to-volume").requests.cpu == 2
    assert plan.step("volume-denoise").requests.memory == 4096


ALLOWED_TAGS = {"parameters": {"tool_tag": {"name": "TOOL_TAG", "enum": ["2.0", "3.1", "bad tag"], "at": [1, 1]}}}


def test_parameters_are_kept_then_resolved() -> None:
    plan = plan_of("08-", ALLOWED_TAGS)
    assert plan.step("overlap").image == "${{ TOOL_IMAGE }}"
    resolved = resolve_plan(plan, {"tool_tag": "3.1"})
    assert resolved.step("overlap").tag == "3.1"
    assert resolved.step("overlap").image == "example/assembly-tools"
    assert resolved.step("overlap").command[-1].endswith("-t 16")
    with pytest.raises(CompileError, match="unknown parameter 'NOPE'"):
        resolve_plan(plan, {"NOPE": "x"})
    with pytest.raises(CompileError, match="tag"):
        resolve_plan(plan, {"TOOL_TAG": "bad tag"})


def test_a_parameter_that_chooses_an_image_is_pinned_to_its_default_without_an_enum() -> None:
    plan = plan_of("08-")
    assert plan.settings.parameters["tool_image"]["enum"] == ["example/assembly-tools"]
    assert resolve_plan(plan, {"TOOL_IMAGE": "example/assembly-tools"}).step("overlap").image == "example/assembly-tools"
    with pytest.raises(CompileError, match=r"'evil.example/miner' is not one of example/assembly-tools"):
        resolve_plan(plan, {"TOOL_IMAGE": "evil.example/miner"})
    with pytest.raises(CompileError, match="TOOL_TAG"):
        resolve_plan(plan, {"TOOL_TAG": "latest"})


@pytest.mark.parametrize("value", ["16; rm -rf /output", "16\nid", "$(id)", "`id`", "16 && id", "16|id"])
def test_shell_characters_never_reach_a_sh_c_command(value: str) -> None:
    plan = plan_of("08-")
    with pytest.raises(CompileError, match="ALIGN_THREADS|align_threads.*runs a shell"):
        resolve_plan(plan, {"ALIGN_THREADS": value})
    assert resolve_plan(plan, {"ALIGN_THREADS": "32"}).step("overlap").command[-1].endswith("-t 32")


def test_a_pattern_rule_is_checked_at_run_time_and_allows_what_it_matches() -> None:
    rules = {"parameters": {"align_threads": {"name": "ALIGN_THREADS", "pattern": "[0-9]{1,3}", "at": [1, 1]}}}
    plan = plan_of("08-", rules)
    assert resolve_plan(plan, {"ALIGN_THREADS": "64"}).step("overlap").command[-1].endswith("-t 64")
    with pytest.raises(CompileError, match="does not match the pattern"):
        resolve_plan(plan, {"ALIGN_THREADS": "64; id"})


def test_models_compile_to_the_implicit_inference_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.yaml"
    path.write_text("api-version: 0.6.0\nname: m\noperators:\n- name: a\n  container: {image: x/a}\n"
                    "  models: [{name: liver}]\n- name: b\n  container: {image: x/b}\n  models: [{name: spleen}]\n"
                    "x-airflow:\n  models: {image: local/triton, tag: '1', repository: /srv/models}\n")
    plan = compile_pipeline(load_pipeline(path))
    (svc,) = plan.services
    assert (svc.image, svc.tag) == ("local/triton", "1")
    assert svc.command == ("tritonserver", "--model-repository=/srv/models", "--model-control-mode=poll")
    assert svc.models == ("liver", "spleen")
    assert svc.host_mounts == (("/srv/models", "/srv/models"),)
    assert set(plan.step("a").env_names) == {"NVIDIA_TRITON_HTTPURI", "NVIDIA_TRITON_GRPCURI",
                                               "NVIDIA_CLARA_TRTISURI", "CLARA_TRITON_URI"}


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_compiling_is_deterministic(path) -> None:  # type: ignore[no-untyped-def]
    assert compile_pipeline(load_pipeline(path)) == compile_pipeline(load_pipeline(path))


def test_examples_folder_is_used() -> None:
    assert EXAMPLES.is_dir()


SCHEDULED = """api-version: 0.4.0
name: nightly
x-airflow:
  schedule: "0 2 * * *"
operators:
- name: a
  container: {image: busybox, tag: "1"}
  input:
  - path: /in
"""


def test_a_schedule_needs_a_default_payload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from clara_airflow.errors import SpecError

    path = tmp_path / "nightly.yaml"
    path.write_text(SCHEDULED)
    with pytest.raises(SpecError) as info:
        compile_pipeline(load_pipeline(path))
    assert str(info.value).startswith(f"{path}:4:3: schedule '0 2 * * *' (from the x-airflow block) needs a default")
    assert "set payload.input" in str(info.value)
    plan = compile_pipeline(load_pipeline(path), {"payload.input": "/data/incoming"})
    assert plan.settings.schedule == "0 2 * * *"
    path.write_text(SCHEDULED.replace('x-airflow:\n  schedule: "0 2 * * *"\n', ""))
    with pytest.raises(SpecError, match=r"nightly.yaml:1:1: schedule '@daily' \(from clara-defaults.yaml or \[clara\]\)"):
        compile_pipeline(load_pipeline(path), {"schedule": "@daily"})


def test_the_service_id_is_recomputed_after_substitution_at_run_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from clara_airflow.compiler.identity import service_id

    path = tmp_path / "p.yaml"
    path.write_text("api-version: 0.4.0\nname: p\nparameters: {MODEL: liver}\noperators:\n- name: a\n"
                    "  container: {image: x/a}\n  services:\n  - name: s\n    container:\n      image: x/s\n"
                    "      command: [serve, '${{ MODEL }}']\n    connections: {http: [{name: S_URI, port: 8080}]}\n"
                    "x-airflow:\n  parameters:\n    MODEL: {enum: [liver, spleen]}\n")
    plan = compile_pipeline(load_pipeline(path))
    resolved = resolve_plan(plan, {"MODEL": "spleen"})
    assert resolved.services[0].id == service_id("x/s", "latest", ["serve", "spleen"]) != plan.services[0].id
    assert resolved.step("a").services[0].service == resolved.services[0].id
