"""Positions: each spec object's view of the file, found from its node only when asked."""

from __future__ import annotations

from pathlib import Path

from clara_airflow.spec.load import load_pipeline
from clara_airflow.spec.positions import Where
from clara_airflow.spec.source import read_document

TEXT = """\
api-version: 0.4.0
name: where
operators:
- name: a
  container:
    image: example/a
    variables: {SHARED: c, ONLY_C: c}
  variables:
    SHARED: op
  input:
  - path: /input
  output:
  - path: /output
"""


def test_values_and_keys_by_key_path() -> None:
    where = Where(read_document("p.yaml", TEXT.encode()))
    assert where.node == (1, 1)
    assert where.at("name") == (2, 7) and where.key("name") == (2, 1)
    assert where.at("operators", 0) == (4, 3) and where.child("operators", 0).node == (4, 3)
    assert where.at("operators", 0, "input", 0, "path") == (11, 11)
    assert where.key("operators", 0, "container", "variables", "ONLY_C") == (7, 28)
    assert where.child("operators", 0, "container").key() == (5, 3)
    assert not where.has("operators", 1) and not where.has("name", "x") and not where.has("operators", "a")


def test_spec_objects_read_their_positions(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(TEXT)
    spec = load_pipeline(path)
    (op,) = spec.operators
    assert spec.where.at("name") == (2, 7) and op.where.node == (4, 3) and op.where.at("name") == (4, 9)
    assert op.inputs[0].where.at("path") == (11, 11) and op.outputs[0].where.get("type") == (13, 5)
    assert op.variable_at("SHARED") == (9, 5), "the operator's own variable wins over its container's"
    assert op.variable_at("ONLY_C") == (7, 28)
    assert op.container.where.get("hostVolumePath") == op.container.where.node == (6, 5)


def test_an_object_built_in_code_is_at_the_start() -> None:
    where = Where()
    assert where.node == (1, 1) and where.get("name") == (1, 1) and where.get("x", default=(3, 4)) == (3, 4)
    assert not where.has("name")
    try:
        where.key("name")
    except KeyError:
        pass
    else:
        raise AssertionError("a code-built object has no keys")
