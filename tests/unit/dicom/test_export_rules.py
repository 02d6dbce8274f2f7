"""register-results as a DICOM export: what the compiler accepts and refuses (positioned), and the
destinations it reads from the receiver's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.dicom.config import configured_destinations
from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline
from tests.helpers import write

PIPELINE = """\
api-version: 0.4.0
name: to-pacs
{airflow}operators:
- name: seg
  container: {{image: example/seg, tag: "1"}}
  input: [{{path: /input}}]
  output: [{{path: /output}}]
- name: register-dicom-output
  container:
    image: {image}
    tag: "0.8.1-2108.1"
    command: {command}
  input:
  - from: seg
    path: /input
"""
REFERENCE = Path(__file__).parents[2] / "fixtures" / "reference"
GOOD = '["python", "register.py", "--agent", "ClaraSCU", "--data", "[\\"MYPACS\\"]"]'


def plan(tmp_path: Path, *, image: str = "clara/register-results", command: str = GOOD, airflow: str = "",
         destinations: tuple[str, ...] | None = ("MYPACS", "ARCHIVE")) -> object:
    path = write(tmp_path, PIPELINE.format(image=image, command=command, airflow=airflow))
    return compile_pipeline(load_pipeline(path), destinations=destinations)


def test_register_results_becomes_an_export_to_its_destinations(tmp_path: Path) -> None:
    found = plan(tmp_path)
    steps = {s.name: s for s in found.steps}  # type: ignore[attr-defined]
    assert steps["register-dicom-output"].export == ("MYPACS",) and steps["seg"].export == ()
    nvcr = plan(tmp_path, image="nvcr.io/nvidia/clara/register-results")
    assert [s.export for s in nvcr.steps][-1] == ("MYPACS",)  # type: ignore[attr-defined]
    other = plan(tmp_path, image="example/register-results", command='["python", "register.py", "--agent", "x"]')
    assert all(not s.export for s in other.steps), "only clara/register-results is built in"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("command", "destinations", "airflow", "message"), [
    ('["python", "register.py", "--agent", "ClaraSCU", "--data", "[\\"NOPE\\"]"]', ("MYPACS",), "",
     "destination(s) NOPE not configured; add them to destinations: in [clara] dicom_config (configured: MYPACS)"),
    ('["python", "register.py", "--agent", "ClaraSCU", "--data", "MYPACS"]', ("MYPACS",), "",
     "--data must be a JSON list of destination names"),
])
def test_refusals_are_positioned_at_the_command(tmp_path: Path, command: str, destinations: tuple[str, ...] | None,
                                                airflow: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as err:
        plan(tmp_path, command=command, destinations=destinations, airflow=airflow)
    problem = err.value.problems[0]
    assert (problem.line, problem.col) == (12, 14) and "operator 'register-dicom-output'" in problem.message


@pytest.mark.parametrize(("command", "destinations", "export", "skip", "warning"), [
    ('["python", "register.py", "--agent", "renderserver"]', ("MYPACS",), (),
     "register-results agent 'renderserver' is not supported by clara-airflow",
     "its task is skipped at run time. Remove the operator, or send DICOM with `--agent ClaraSCU"),
    ('["python", "register.py"]', None, (), "register-results agent '(none)' is not supported", "skipped at run time"),
    (GOOD, None, ("MYPACS",), "", "no DICOM destinations are configured, so the export task fails at run time"),
])
def test_a_pipeline_is_never_refused_for_its_optional_last_step(tmp_path: Path, command: str,
                                                                 destinations: tuple[str, ...] | None,
                                                                 export: tuple[str, ...], skip: str,
                                                                 warning: str) -> None:
    found: Any = plan(tmp_path, command=command, destinations=destinations)
    step = found.step("register-dicom-output")
    assert step.export == export and step.skip.startswith(skip) and bool(step.skip) == bool(skip)
    (problem,) = found.warnings
    assert (problem.line, problem.col) == (12, 14) and warning in problem.message
    assert problem.message.startswith("warning: operator 'register-dicom-output'")


def test_nvidia_style_reference_pipelines_validate_with_warnings_only(capsys: pytest.CaptureFixture[str]) -> None:
    from clara_airflow.cli import main

    assert main(["validate", "--warnings", str(REFERENCE)]) == 0
    out = capsys.readouterr()
    assert "3 valid, 0 invalid" in out.err
    assert out.out.count("warning: ") == 5 and out.out.count("'renderserver' is not supported") == 2


def test_a_skipped_step_says_why_in_the_dag_docs_and_at_run_time(tmp_path: Path) -> None:
    from clara_airflow.airflow_compat import AirflowSkipException
    from clara_airflow.dag import render_doc
    from clara_airflow.operators.dicom_export import DicomExportOperator
    from clara_airflow.settings import Options

    found: Any = plan(tmp_path, command='["python", "register.py", "--agent", "renderserver"]')
    assert "| `register-dicom-output` | skipped at run time: register-results agent 'renderserver'" in render_doc(found)
    task = DicomExportOperator(task_id="register-dicom-output", step=found.step("register-dicom-output"),
                               parameters=[], options=Options(pipeline=found.settings))
    with pytest.raises(AirflowSkipException, match="'renderserver' is not supported by clara-airflow"):
        task.execute({})


def test_the_export_is_refused_on_kubernetes(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="runs with the Docker backend only"):
        plan(tmp_path, airflow="x-airflow: {backend: kubernetes, payload: {claim: data}}\n")


def test_destinations_come_from_the_receivers_configuration(tmp_path: Path) -> None:
    config = tmp_path / "dicom.yaml"
    config.write_text("inbox: /data/in\nae_titles: {CT: {pipelines: [p]}}\n"
                      "destinations: {MYPACS: {host: 127.0.0.1, port: 4242, ae_title: ORTHANC}}\n")
    assert configured_destinations(str(config)) == ("MYPACS",) and configured_destinations(None) is None
