"""One small defect per case, each pinned to its rule, line and message words (clara-pdl.md section 13)."""

from __future__ import annotations

import pytest

from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline
from tests.helpers import BASE, write


def problems_of(tmp_path, text: str):  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError) as info:
        load_pipeline(write(tmp_path, text))
    return info.value.problems


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


CASES = [
    pytest.param("a: [1\n", "V2", 2, ["invalid yaml"], id="V2-syntax"),
    pytest.param(BASE + "---\nname: other\n", "V3", 12, ["exactly one yaml document"], id="V3-two-docs"),
    pytest.param("", "V3", 1, ["exactly one yaml document"], id="V3-empty"),
    pytest.param("a: &x [*x]\n", "V4", 1, ["alias"], id="V4-recursive"),
    pytest.param(replace("name: base", "name: !!python/name:os.system base"), "V5", 2, ["tag"], id="V5-tag"),
    pytest.param(replace("name: base", "name: !!binary aGVsbG8="), "V5", 2, ["tag"], id="V5-binary"),
    pytest.param(replace("name: base", "name: base\nyes: 1"), "V6", 3, ["key must be a string"], id="V6-bool-key"),
    pytest.param(replace("name: base", "name: base\n<<: {}"), "V6", 3, ["key must be a string"], id="V6-merge"),
    pytest.param(replace("name: base", "name: base\nname: again"), "V7", 3, ["duplicate key"], id="V7"),
    pytest.param(replace("  output:", "  services:\n  - import: x.yaml\n  output:"), "V8", 11,
                 ["import", "not supported"], id="V8-service-import"),
    pytest.param(replace("    tag: \"1.0\"", "    tag: \"1.0\"\n    comand: [x]"), "V9", 8,
                 ["unknown key", "comand", "did you mean 'command'"], id="V9-hint"),
    pytest.param(replace("name: base\n", ""), "V10", 1, ["missing required key", "name"], id="V10-name"),
    pytest.param(replace("  - path: /output", "  - name: o"), "V10", 11, ["missing required key", "path"],
                 id="V10-output-path"),
    pytest.param(replace("operators:\n", "operators: []\nx-old:\n"), "V11", 3, ["must be"], id="V11-empty-ops"),
    pytest.param(replace("    tag: \"1.0\"", "    tag: \"1.0\"\n    command: run"), "V11", 8, ["must be a list"],
                 id="V11-command-string"),
    pytest.param(replace("api-version: 0.4.0", "api-version: 1.0.0"), "V12", 1, ["api-version"], id="V12"),
    pytest.param(replace("name: base", "name: base\norchestrator: Tekton"), "V13", 3, ["orchestrator"], id="V13"),
    pytest.param(replace("name: base", "name: my pipeline"), "V14", 2, ["invalid name"], id="V14-space"),
    pytest.param(replace("name: base", "name: " + "p" * 251), "V14", 2, ["invalid name"], id="V14-long"),
    pytest.param(replace("  input:", "  variables:\n    my-var: x\n  input:"), "V15", 9,
                 ["environment variable name"], id="V15"),
    pytest.param(BASE + BASE.split("operators:\n")[1].replace("container", "container", 1), "V16", 12,
                 ["duplicate", "a"], id="V16-operator"),
    pytest.param(replace("  input:", "  variables:\n    FOO: x\n    foo: y\n  input:"), "V17", 10,
                 ["defined twice", "foo"], id="V17-case"),
    pytest.param(replace("image: example/a", "image: example/a:1.0"), "V18", 6, ["image"], id="V18-image-tag"),
    pytest.param(replace("tag: \"1.0\"", "tag: \"-bad\""), "V18", 7, ["tag"], id="V18-tag"),
    pytest.param(replace("  - path: /output", "  - path: /input"), "V19", 11, ["path"], id="V19-repeat"),
    pytest.param(replace("  - path: /output", "  - path: /a/../b"), "V19", 11, ["path"], id="V19-dotdot"),
    pytest.param(replace("  - path: /output", "  - path: /output\n    type: stream"), "V20", 12,
                 ["requires api-version 0.5.0"], id="V20"),
    pytest.param(replace("  - path: /input", "  - from: ghost\n    path: /input"), "V23", 9,
                 ["unknown operator", "ghost"], id="V23"),
    pytest.param(replace("  input:", "  requests:\n    cpu: 0\n  input:"), "V26", 9, ["cpu"], id="V26"),
    pytest.param(replace("  input:", "  requests:\n    memory: \"512\"\n  input:"), "V11", 9, ["must be an integer"],
                 id="V11-quoted-int"),
    pytest.param(replace("  input:", "  requests:\n    memory: !!int 096\n  input:"), "V11", 9, ["must be an integer"],
                 id="V11-explicit-int-tag-on-text"),
    pytest.param(replace("    tag: \"1.0\"", "    tag: \"1.0\"\n    command:\n    - run\n    -"), "V11", 10,
                 ["command item", "empty (null)"], id="V11-null-command-item"),
    pytest.param(replace("name: base", "name: base\nx-airflow:\n  catchup: !!bool maybe"), "V11", 4,
                 ["must be a boolean"], id="V11-explicit-bool-tag-on-text"),
    pytest.param(replace("tag: \"1.0\"", "tag: ${{ T"), "V29", 7, ["placeholder"], id="V29"),
    pytest.param(replace("  - path: /input", "  - path: /in${{ X }}"), "V30", 9, ["placeholder", "not allowed"],
                 id="V30"),
    pytest.param(replace("tag: \"1.0\"", "tag: ${{ MISSING }}"), "V31", 7, ["undeclared parameter", "MISSING"],
                 id="V31"),
    pytest.param(replace("operators:", "parameters:\n  clara_payload: x\noperators:"), "V32", 4, ["reserved"],
                 id="V32-reserved"),
    pytest.param(replace("operators:", "x-airflow:\n  backend: nomad\noperators:"), "V33", 4,
                 ["x-airflow", "backend"], id="V33-backend"),
    pytest.param(replace("operators:", "x-airflow:\n  services:\n    idle_ttl: 5\noperators:"), "V33", 5,
                 ["x-airflow", "idle_ttl"], id="V33-ttl"),
    pytest.param(replace("operators:", "x-airflow:\n  schedul: '@daily'\noperators:"), "V9", 4,
                 ["unknown key", "schedule"], id="V9-x-airflow"),
]


@pytest.mark.parametrize(("text", "rule", "line", "words"), CASES)
def test_rule(tmp_path, text: str, rule: str, line: int, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    problems = problems_of(tmp_path, text)
    assert [(p.rule, p.line) for p in problems] == [(rule, line)], [str(p) for p in problems]
    for word in words:
        assert word.lower() in problems[0].message.lower()


def test_all_errors_are_reported_together_sorted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = replace("name: base", "name: base\norchestrator: Tekton").replace("tag: \"1.0\"", "tag: \"1.0\"\n    comand: [x]")
    text = text.replace("  - path: /output", "  - path: output")
    problems = problems_of(tmp_path, text)
    assert [p.rule for p in problems] == ["V13", "V9", "V19"]
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_loading_errors_stop_at_the_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = problems_of(tmp_path, "a: 1\na: 2\nb: !!set {}\n")
    assert [(p.rule, p.line) for p in problems] == [("V7", 2)]


def test_file_too_large(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 1_048_577)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    assert info.value.problems[0].rule == "V1"
    assert "too large" in info.value.problems[0].message


def test_not_utf8(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    assert (info.value.problems[0].rule, info.value.problems[0].line) == ("V2", 1)


def test_alias_bomb_is_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]")
    problems = problems_of(tmp_path, "\n".join(lines) + "\n")
    assert problems[0].rule == "V4"
    assert "alias" in problems[0].message


def test_small_aliases_are_allowed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = BASE.replace("  container:", "  container: &c").replace("  input:", "  x-copy: *c\n  input:")
    assert load_pipeline(write(tmp_path, text)).name == "base"


def test_shared_memory_types_are_rejected_naming_the_operator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = replace("api-version: 0.4.0", "api-version: 0.5.0").replace(
        "  - path: /input", "  - path: /input\n    type: stream\n    element-type: dicom").replace(
        "  - path: /output", "  - name: o\n    type: f32")
    problems = problems_of(tmp_path, text)
    assert [(p.rule, p.line) for p in problems] == [("V22", 14)]
    assert "shared memory" in problems[0].message and "'a'" in problems[0].message


CHAIN = """\
api-version: 0.5.0
name: typed
operators:
- name: a
  container: {image: example/a}
  output:
  - {name: vol, path: /out, type: stream, element-type: mhd}
  - {name: info, path: /info, type: stream, element-type: json}
- name: b
  container: {image: example/b}
  input:
  - {from: a, name: vol, path: /in, type: stream, element-type: nifti}
  - {from: a, path: /x, type: stream, element-type: json}
  - {from: a, name: nope, path: /y, type: stream, element-type: json}
"""


def test_output_selection_and_type_mismatch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = problems_of(tmp_path, CHAIN)
    assert [(p.rule, p.line) for p in problems] == [("V24", 12), ("V24", 13), ("V24", 14)]
    assert "type mismatch" in problems[0].message
    assert "several outputs" in problems[1].message
    assert "has no output 'nope'" in problems[2].message


def test_cycle_names_every_operator_on_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = """\
api-version: 0.4.0
name: loop
operators:
- name: a
  container: {image: x/a}
  input: [{from: c, path: /in}]
  output: [{path: /out}]
- name: b
  container: {image: x/b}
  input: [{from: a, path: /in}]
  output: [{path: /out}]
- name: c
  container: {image: x/c}
  input: [{from: b, path: /in}]
  output: [{path: /out}]
"""
    problems = problems_of(tmp_path, text)
    assert [(p.rule, p.line) for p in problems] == [("V25", 6)]
    for name in ("a", "b", "c"):
        assert f"{name} ->" in problems[0].message or f"-> {name}" in problems[0].message


def test_parameter_declared_twice_with_other_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = replace("operators:", "parameters:\n  T: \"1\"\noperators:").replace(
        "  input:", "  parameters:\n    t: \"2\"\n  input:")
    problems = problems_of(tmp_path, text)
    assert [(p.rule, p.line) for p in problems] == [("V32", 11)]
    assert "default" in problems[0].message


def test_container_variables_merge_with_a_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = replace("    tag: \"1.0\"", "    tag: \"1.0\"\n    variables: {MODE: c, ONLY: x}").replace(
        "  input:", "  variables:\n    mode: op\n  input:")
    spec = load_pipeline(write(tmp_path, text))
    assert dict(spec.operators[0].variables) == {"ONLY": "x", "mode": "op"}
    assert any("overrides" in w.message for w in spec.warnings)


def test_models_give_four_variables_and_clash_with_same_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = ("api-version: 0.6.0\nname: m\noperators:\n- name: a\n  container: {image: x/a}\n"
            "  models:\n  - name: liver\n  variables:\n    CLARA_TRITON_URI: x\n")
    problems = problems_of(tmp_path, text)
    assert [(p.rule, p.line) for p in problems] == [("V17", 9)]


def test_models_below_0_6_only_warn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = load_pipeline(write(tmp_path, replace("  input:", "  models:\n  - name: liver\n  input:")))
    assert spec.operators[0].models == ("liver",)
    assert any("0.6.0" in w.message for w in spec.warnings)


def test_identity_conflict_on_volume_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svc = ("  services:\n  - name: s\n    container: {image: x/s}\n    connections:\n"
           "      volume: [{name: STORE, path: %s}]\n")
    text = BASE + "- name: b\n  container: {image: x/b}\n" + svc % "/two"
    text = text.replace("  output:\n  - path: /output\n", "  output:\n  - path: /output\n" + svc % "/one", 1)
    problems = problems_of(tmp_path, text)
    assert [p.rule for p in problems] == ["V28"]
    assert "STORE" in problems[0].message and "conflict" in problems[0].message
