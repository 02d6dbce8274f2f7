"""Typed settings: ``[clara]`` deployment options are parsed once into real types, every bad one is
reported together with its option name, and settings round-trip through JSON-safe operator arguments."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from clara_airflow.errors import ClaraAirflowError
from clara_airflow.settings import (
    DEPLOYMENT_OPTIONS,
    Deployment,
    Options,
    Payload,
    PipelineSettings,
    Resources,
    parse_deployment,
)
from clara_airflow.spec.defaults import BUILTIN, parse_config, pipeline_settings


def test_defaults() -> None:
    found, problems = parse_deployment({})
    assert problems == [] and found == Deployment()
    assert (found.docker_url, found.network, found.strict, found.keep_failed_pods, found.service_heartbeat) == (
        "unix://var/run/docker.sock", "clara-airflow", False, True, 60.0)
    assert (found.in_cluster, found.node_selector, found.tolerations, found.payload_root) == (None, {}, (), None)


@pytest.mark.parametrize(("raw", "value"), [("True", True), ("true", True), (" yes ", True), ("1", True), ("on", True),
                                            ("False", False), ("no", False), ("0", False), ("OFF", False)])
def test_true_and_false_as_airflow_spells_them(raw: str, value: bool) -> None:
    found, problems = parse_deployment({"strict": raw, "keep_failed_pods": raw, "remove_orphans": raw,
                                        "in_cluster": raw})
    assert problems == []
    assert found.strict is found.keep_failed_pods is found.remove_orphans is found.in_cluster is value


def test_typed_values() -> None:
    found, problems = parse_deployment({
        "service_heartbeat": "15.5", "step_user": "1000:2000", "payload_root": " /incoming ", "in_cluster": "",
        "node_selector": '{"pool": "cpu"}', "gpu_node_selector": '{"nvidia.com/gpu.present": "true"}',
        "tolerations": '[{"key": "nvidia.com/gpu", "operator": "Exists"}]', "NETWORK": "clara-net",
        "service_account": "", "unrelated": "ignored here"})
    assert problems == []
    assert found.service_heartbeat == 15.5 and found.step_user == "1000:2000" and found.payload_root == "/incoming"
    assert found.in_cluster is None and found.service_account is None and found.network == "clara-net"
    assert found.node_selector == {"pool": "cpu"} and found.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
    assert found.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists"},)


@pytest.mark.parametrize("user", ["worker", "0", "1000", "1000:2000", ""])
def test_step_user_forms(user: str) -> None:
    found, problems = parse_deployment({"step_user": user})
    assert problems == [] and found.step_user == (user or None)


def test_every_bad_option_is_reported_at_once_with_its_name_and_value() -> None:
    _, problems = parse_deployment({
        "strict": "maybe", "service_heartbeat": "soon", "step_user": "root", "node_selector": "pool=cpu",
        "gpu_node_selector": '{"a": 1}', "tolerations": '{"key": "x"}', "network": " ", "in_cluster": "perhaps",
        "keep_failed_pods": "", "service_heartbeat_x": "1"})
    assert problems == [
        "[clara] strict = 'maybe': must be True or False",
        "[clara] service_heartbeat = 'soon': must be a number of seconds (0 turns the heartbeat off)",
        "[clara] step_user = 'root': must be UID, UID:GID or 'worker'",
        "[clara] node_selector = 'pool=cpu': is not valid JSON (Expecting value: line 1 column 1 (char 0))",
        '[clara] gpu_node_selector = \'{"a": 1}\': must be a JSON object of strings, like '
        '{"nvidia.com/gpu.present": "true"}',
        '[clara] tolerations = \'{"key": "x"}\': must be a JSON list of objects, like '
        '[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        "[clara] network = ' ': must not be empty",
        "[clara] in_cluster = 'perhaps': must be True or False",
        "[clara] keep_failed_pods = '': must be True or False",
    ]


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_a_heartbeat_must_be_finite(raw: str) -> None:
    _, problems = parse_deployment({"service_heartbeat": raw})
    assert problems == [f"[clara] service_heartbeat = '{raw}': must be a finite number of seconds"]


def test_step_grace_is_seconds_zero_or_more_and_defaults_to_ten_minutes() -> None:
    assert parse_deployment({})[0].step_grace == 600.0
    found, problems = parse_deployment({"step_grace": " 0 "})
    assert (found.step_grace, problems) == (0.0, [])
    for raw, why in (("-1", "must be a finite number of seconds, 0 or more"),
                     ("nan", "must be a finite number of seconds, 0 or more"),
                     ("later", "must be a number of seconds")):
        assert parse_deployment({"step_grace": raw})[1] == [f"[clara] step_grace = '{raw}': {why}"]


def test_parse_config_reports_pipeline_and_deployment_problems_together() -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        parse_config({"retries": "many", "strict": "maybe", "colour": "blue", "output_root": "/srv/out"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[clara] retries = 'many': ")
    assert lines[1].startswith("[clara] colour: unknown option")
    assert lines[2] == "[clara] strict = 'maybe': must be True or False"


def test_parse_config_splits_pipeline_settings_from_deployment_options() -> None:
    settings, found = parse_config({"output_root": "/srv/out", "retries": "2", "strict": "True", "network": "n"})
    assert settings == {"payload.output_root": "/srv/out", "retries": 2}
    assert found == Deployment(strict=True, network="n")


def test_the_flat_defaults_are_the_typed_defaults() -> None:
    assert PipelineSettings.from_flat(BUILTIN) == PipelineSettings()
    assert set(DEPLOYMENT_OPTIONS) == {f.name for f in dataclasses.fields(Deployment)}


def test_pipeline_settings_from_merged_layers() -> None:
    found = pipeline_settings({"payload.input": "/in", "resources.memory": 2048}, {"payload.input": "/other",
                                                                                  "models.requests.gpu": 0})
    assert found.payload == Payload(input="/in")
    assert found.resources == Resources(1, 2048, 0) and found.models.requests == Resources(1, 4096, 0)
    with pytest.raises(ClaraAirflowError, match="unknown PipelineSettings field"):
        PipelineSettings.from_flat({"colour": "blue"})


def test_options_round_trip_through_json_safe_values() -> None:
    options = Options(pipeline_settings({"tags": ("a", "b"), "parameters": {"x": {"enum": ["1"]}},
                                         "services.idle_ttl": 120}),
                      Deployment(tolerations=({"key": "k"},), node_selector={"a": "b"}, in_cluster=True))
    plain: Any = json.loads(json.dumps(options.to_dict()))
    assert Options.from_dict(plain) == options
    assert plain["pipeline"]["services"]["idle_ttl"] == 120 and plain["deployment"]["tolerations"] == [{"key": "k"}]


def test_a_recorded_location_replaces_network_and_namespace_only() -> None:
    options = Options(pipeline_settings({"namespace": "a"}), Deployment(network="n1", strict=True))
    moved = options.located(network="n2", namespace="b")
    assert (moved.deployment.network, moved.pipeline.namespace, moved.deployment.strict) == ("n2", "b", True)
    assert options.located() == options


def test_tolerations_are_checked_as_a_pod_spec_spells_them_and_reach_the_pod() -> None:
    """tolerationSeconds once broke DAG parsing (a TypeError from V1Toleration); a wrong key or type is
    now an error naming the option, and the seconds reach the pod."""
    from clara_airflow.backends.kubernetes_pods import scheduling

    given = '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]'
    found, problems = parse_deployment({"tolerations": given})
    assert problems == []
    _, (toleration,) = scheduling(found, 1)  # type: ignore[misc]
    assert (toleration.key, toleration.operator, toleration.effect, toleration.toleration_seconds) == (
        "nvidia.com/gpu", "Exists", "NoExecute", 300)
    for bad, message in (('[{"key": "a", "toleration_seconds": 5}]', "has the key 'toleration_seconds'"),
                         ('[{"key": "a", "tolerationSeconds": "5"}]', "tolerationSeconds must be a int"),
                         ('[{"key": "a", "operator": "In"}]', "operator must be Equal or Exists"),
                         ('[{"key": "a", "effect": "NoRun"}]', "effect must be NoSchedule")):
        _, problems = parse_deployment({"tolerations": bad})
        assert len(problems) == 1 and message in problems[0], problems
