"""build_dag without an engine: trigger-form schemas from parameter rules, time limits, task layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.dag import build_dag
from clara_airflow.spec.load import load_pipeline
from tests.helpers import VALID

RULES = """
x-airflow:
  timeout: 600
  run_timeout: 7200
  parameters:
    ALIGN_THREADS: {pattern: "[0-9]{1,3}", max_length: 3}
    TOOL_TAG: {enum: ["2.0", "2.1"]}
"""


def dag_of(tmp_path: Path, extra: str = RULES) -> Any:
    path = tmp_path / "p.yaml"
    path.write_text(next(p for p in VALID if p.name.startswith("08-")).read_text() + extra)
    return build_dag(compile_pipeline(load_pipeline(path)))


@pytest.mark.parametrize(("name", "value"), [("ALIGN_THREADS", "16; id"), ("ALIGN_THREADS", "1234"),
                                             ("TOOL_TAG", "latest"), ("TOOL_IMAGE", "evil.example/miner")])
def test_the_trigger_form_refuses_values_outside_the_rules(tmp_path: Path, name: str, value: str) -> None:
    from clara_airflow.airflow_compat import ParamValidationError

    param = dag_of(tmp_path).params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value=value)


def test_the_trigger_form_accepts_allowed_values(tmp_path: Path) -> None:
    params = dag_of(tmp_path).params
    assert params.get_param("ALIGN_THREADS").resolve(value="32") == "32"
    assert params.get_param("TOOL_TAG").resolve(value="2.1") == "2.1"
    assert params.get_param("TOOL_IMAGE").schema["enum"] == ["example/assembly-tools"]  # pinned to its default


def test_steps_have_the_time_limit_and_runs_the_run_limit(tmp_path: Path) -> None:
    dag = dag_of(tmp_path)
    assert dag.dagrun_timeout.total_seconds() == 7200
    assert {t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks} == {
        "overlap": 600, "layout": 600, "polish": 600}


def test_the_default_step_limit_is_clara_maximum_and_runs_have_none(tmp_path: Path) -> None:
    dag = dag_of(tmp_path, "")
    assert dag.dagrun_timeout is None
    assert {t.execution_timeout.total_seconds() for t in dag.tasks} == {1800}


def test_rules_for_an_undeclared_parameter_or_a_default_that_breaks_them_are_errors(tmp_path: Path) -> None:
    from clara_airflow.errors import SpecError

    with pytest.raises(SpecError) as caught:
        dag_of(tmp_path, "x-airflow:\n  parameters:\n    NOPE: {max_length: 3}\n    ALIGN_THREADS: {pattern: 'x+'}\n")
    text = str(caught.value)
    assert "x-airflow.parameters names 'NOPE', which no `parameters` map declares" in text
    assert "the default of parameter 'ALIGN_THREADS' '16' does not match the pattern x+" in text
