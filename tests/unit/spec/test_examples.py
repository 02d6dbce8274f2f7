"""The shared example pipelines: every valid one loads, every invalid one fails exactly as EXPECTED.md says."""

from __future__ import annotations

from pathlib import Path

import pytest

from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline
from tests.helpers import INVALID, VALID, expected_errors


def test_examples_are_present() -> None:
    assert len(VALID) >= 8
    assert len(INVALID) >= 10
    assert set(expected_errors()) == {p.name for p in INVALID}


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_loads(path: Path) -> None:
    spec = load_pipeline(path)
    assert spec.name
    assert spec.operators


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_fails_with_exactly_the_expected_error(path: Path) -> None:
    rule, line, words = expected_errors()[path.name]
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    problems = info.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.rule == rule
    assert problem.line == line
    for word in words:
        assert word.lower() in problem.message.lower()
    assert str(problem).startswith(f"{path}:{line}:{problem.col}: ")


def test_warnings_for_unquoted_numbers() -> None:
    spec = load_pipeline(next(p for p in VALID if p.name.startswith("02-")))
    assert [w.line for w in spec.warnings] == [17]
    assert "TRACE_LEVEL" in spec.warnings[0].message
    variables = dict(spec.operators[0].variables)
    assert variables["TRACE_LEVEL"] == "2"


def test_quoted_numeric_tag_keeps_its_text() -> None:
    spec = load_pipeline(next(p for p in VALID if p.name.startswith("01-")))
    assert spec.operators[0].container.tag == "2.1"
    assert spec.pull_secrets == ("my-registry-secret",)


SCALARS = ["", "~", "null", "Null", "true", "yes", "On", "off", "1.10", "010", "0o17", "0x1F", "-1", "+1.5e3",
           ".inf", "-.Inf", ".nan", "2024-01-01", "2024-01-01 10:00:00Z", "<<", "=", "1_000", "3:25:45", "latest",
           "${{ TAG }}", "$(HOST)", "-", ".", "0"]


def _shape(node: object) -> object:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return node.tag, node.value, node.start_mark.line, node.start_mark.column
    assert isinstance(node, yaml.CollectionNode)
    items = [(_shape(k), _shape(v)) if isinstance(node, yaml.MappingNode) else _shape(k)
             for k, v in (node.value if isinstance(node, yaml.MappingNode) else [(x, None) for x in node.value])]
    return node.tag, items


@pytest.mark.parametrize("path", [*VALID, *INVALID], ids=lambda p: p.name)
def test_fast_loader_tags_like_pyyaml_safe_loader(path: Path) -> None:
    import yaml

    from clara_airflow.spec.source import _Loader

    text = path.read_text()
    try:
        reference = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        pytest.skip("not readable YAML (a loading-rule example)")
    assert _shape(yaml.compose(text, Loader=_Loader)) == _shape(reference)


def test_fast_loader_resolves_every_implicit_type_like_pyyaml() -> None:
    import yaml

    from clara_airflow.spec.source import _Loader

    text = "\n".join(f"- {s}" if s else "-" for s in SCALARS) + "\n- ''" + "\n- {a: 1, ? [x]: y}\n"
    assert _shape(yaml.compose(text, Loader=_Loader)) == _shape(yaml.compose(text, Loader=yaml.SafeLoader))
