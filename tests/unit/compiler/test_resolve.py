"""Run-time resolution of parameters, table by table: every rule and every message pinned."""

from __future__ import annotations

import dataclasses

import pytest

from clara_airflow.compiler.identity import volume_name
from clara_airflow.compiler.plan import MountPlan, ServiceUse
from clara_airflow.compiler.resolve import (
    MAX_VALUE_LENGTH,
    SHELLS,
    check_image,
    check_shell_values,
    parameter_values,
    resolve_plan,
    resolve_service,
    resolve_step,
    runs_shell,
)
from clara_airflow.errors import CompileError
from tests.helpers import busybox_service

DECLARED = [["A", "1"], ["B", "2"]]


def test_defaults_are_overridden_by_name_ignoring_case_and_the_payload_is_skipped() -> None:
    assert parameter_values(DECLARED, {"a": "x", "clara_payload": "/p", "B": None}) == {"a": "x", "b": ""}


@pytest.mark.parametrize(("declared", "known"), [(DECLARED, "A, B"), ([], "none")])
def test_an_unknown_parameter_names_the_declared_ones(declared: list[list[str]], known: str) -> None:
    with pytest.raises(CompileError) as caught:
        parameter_values(declared, {"NOPE": "x"})
    assert str(caught.value) == f"unknown parameter 'NOPE'; this pipeline declares: {known}"


def test_values_are_bounded_in_length_and_may_not_hold_nul() -> None:
    assert parameter_values(DECLARED, {"A": "x" * MAX_VALUE_LENGTH})["a"] == "x" * 4096
    message = "parameter 'A' is over 4096 characters or holds a NUL character; give a shorter value"
    for bad in ("x" * (MAX_VALUE_LENGTH + 1), "a\0b"):
        with pytest.raises(CompileError) as caught:
            parameter_values(DECLARED, {"A": bad})
        assert str(caught.value) == message


def test_a_rule_violation_names_the_parameter_and_the_rule() -> None:
    rules = {"a": {"name": "A", "enum": ["1", "3"]}, "zz": {"name": "ZZ", "enum": ["q"]}}
    assert parameter_values(DECLARED, {"A": "3"}, rules)["a"] == "3"
    with pytest.raises(CompileError) as caught:
        parameter_values(DECLARED, {"A": "9"}, rules)
    assert str(caught.value) == ("parameter 'A': '9' is not one of 1, 3 (x-airflow.parameters.A); trigger the run "
                                 "with an allowed value")


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_every_shell_with_c_runs_a_shell(shell: str) -> None:
    assert runs_shell([f"/usr/bin/{shell}", "-c", "x"]) and runs_shell([shell, "-ec", "x"])


@pytest.mark.parametrize("command", [[], ["sh"], ["sh", "-x", "s.sh"], ["sh", "--c"], ["python3", "-c", "x"],
                                     ["/bin/echo", "-c"], ["sh", "script-c.sh"]])
def test_other_commands_do_not(command: list[str]) -> None:
    assert not runs_shell(command)
    assert {"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh"} == SHELLS


@pytest.mark.parametrize(("rule", "allowed"), [({}, False), ({"max_length": 50}, False),
                                               ({"enum": ["a;b"]}, True), ({"pattern": ".*"}, True)])
def test_shell_characters_pass_only_with_an_enum_or_pattern(rule: dict[str, object], allowed: bool) -> None:
    command = ["/bin/sh", "-c", "echo ${{ A }}"]
    if allowed:
        check_shell_values(command, (), {"a": "a;b"}, {"a": rule}, "operator x")
        return
    with pytest.raises(CompileError) as caught:
        check_shell_values(command, (), {"a": "a;b"}, {"a": rule}, "operator x")
    assert str(caught.value) == ("operator x: parameter 'a' holds ';', and the command runs a shell (/bin/sh -c), "
                                 "where that character would change what runs; give a value without shell characters, "
                                 "or allow such values with x-airflow.parameters.a.pattern or enum")


def test_a_parameter_reaching_the_shell_through_a_variable_is_checked_too() -> None:
    with pytest.raises(CompileError, match="parameter 'a' holds '`'"):
        check_shell_values(["sh", "-c", "echo $(V)"], (("V", "${{ A }}"),), {"a": "`id`"}, None, "operator x")
    check_shell_values(["echo", "$(V)"], (("V", "${{ A }}"),), {"a": "`id`"}, None, "operator x")  # no shell


@pytest.mark.parametrize(("image", "tag"), [("registry:5000/team/img", "1.0"), ("img", "latest"), ("a/b", "v_1.2-3")])
def test_valid_images_and_tags_pass(image: str, tag: str) -> None:
    check_image(image, tag, "operator x")


@pytest.mark.parametrize("image", ["", "img:1.0", "reg/img:1", "im g", "img@sha256:abc", "a\tb"])
def test_an_invalid_image_is_named_with_where_it_came_from(image: str) -> None:
    with pytest.raises(CompileError) as caught:
        check_image(image, "1.0", "operator x")
    assert str(caught.value) == (f"operator x: image '{image}' (after parameter substitution) is not a valid image "
                                 "name without tag or digest; fix the parameter value")


@pytest.mark.parametrize("tag", ["", "-x", "a b", "x" * 129, "a:b"])
def test_an_invalid_tag_is_named(tag: str) -> None:
    with pytest.raises(CompileError) as caught:
        check_image("img", tag, "operator x")
    assert str(caught.value) == (f"operator x: tag '{tag}' (after parameter substitution) is not a valid image tag; "
                                 "fix the parameter value")


def test_service_errors_name_every_service_name() -> None:
    svc = dataclasses.replace(busybox_service("aaaaaaaaaaaa", "x", 8080), image="${{ A }}", names=("s1", "s2"))
    with pytest.raises(CompileError, match=r"^service s1, s2: image 'bad:1'"):
        resolve_service(svc, {"a": "bad:1"})
    svc = dataclasses.replace(svc, image="img", command=("sh", "-c", "${{ A }}"))
    with pytest.raises(CompileError, match=r"^service s1, s2: parameter 'a' holds"):
        resolve_service(svc, {"a": "x;y"})


def test_a_steps_volume_follows_its_services_new_id() -> None:
    old, new = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    step = _step(mounts=(MountPlan("/data", "volume", False, volume=volume_name(old, "/data")),
                         MountPlan("/other", "volume", False, volume=volume_name("cccccccccccc", "/other"))),
                 services=(ServiceUse(old, ()),))
    resolved = resolve_step(step, {}, {old: new})
    assert [m.volume for m in resolved.mounts] == [volume_name(new, "/data"), volume_name("cccccccccccc", "/other")]
    assert resolved.services[0].service == new
    assert resolve_step(step, {}, {old: old}).mounts == step.mounts
    with pytest.raises(CompileError, match=r"^operator s: image"):
        resolve_step(dataclasses.replace(step, image="${{ A }}"), {"a": "x:y"}, {})


def test_resolve_plan_returns_the_values_used() -> None:
    from clara_airflow.compiler.plan import PipelinePlan

    plan = PipelinePlan(dag_id="d", source="s", steps=(_step(),), services=(), parameters=(("A", "1"),))
    assert resolve_plan(plan, {"A": "7"}).parameters == (("A", "7"),)


def _step(**changes: object):  # type: ignore[no-untyped-def]
    from clara_airflow.compiler.plan import Requests, StepPlan

    base = StepPlan(name="s", image="img", tag="1", command=(), variables=(), requests=Requests(1, 64, 0),
                    upstream=(), mounts=())
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_every_parameter_in_a_shell_command_is_checked_not_only_the_first() -> None:
    command = ["sh", "-c", "echo ${{ A }} ${{ B }}"]
    with pytest.raises(CompileError, match="parameter 'b' holds"):
        check_shell_values(command, (), {"a": "x;y", "b": "1|2"}, {"a": {"enum": ["x;y"]}}, "operator x")


def test_a_step_shell_error_names_the_operator() -> None:
    step = _step(command=("sh", "-c", "echo ${{ A }}"))
    with pytest.raises(CompileError, match=r"^operator s: parameter 'a' holds"):
        resolve_step(step, {"a": "x;y"}, {})
