"""Property-based: mutated valid pipelines only ever raise positioned SpecErrors, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline
from tests.helpers import VALID

SOURCES = [p.read_text() for p in VALID]
TOKENS = ["", "~", "null", "- ", ": ", "{", "}", "[", "]", "&a ", "*a", "!!int ", "!!set ", "yes", "1.10",
          "${{ X }}", "${{", "$(A)", "..", "/", ":", "x-", "import: y", "\t", "'", '"', "0x1F", "<<: ",
          "-1", "99999", "'8080': 1", "\n- ", "\n  ", "é", "\x00", "!!bool ", "!!float ", "!!null ", "!!str ",
          "!!map ", "!!seq "]


def check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            compile_pipeline(load_pipeline(path))  # the compiler's SpecErrors are positioned too
        except SpecError as exc:
            assert exc.problems
            for problem in exc.problems:
                assert problem.line >= 1 and problem.col >= 1 and problem.message
                assert str(problem).startswith(f"{path}:{problem.line}:{problem.col}: ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SOURCES), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 40), st.sampled_from(TOKENS)),
                                         min_size=1, max_size=4))
def test_token_mutations(source: str, edits: list[tuple[float, int, str]]) -> None:
    text = source
    for where, cut, token in edits:
        at = int(where * len(text))
        text = text[:at] + token + text[at + cut:]
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SOURCES), st.data())
def test_line_deletions_and_swaps(source: str, data: st.DataObject) -> None:
    lines = source.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        del lines[i]
    else:
        lines[i], lines[j] = lines[j], lines[i]
    check("\n".join(lines) + "\n")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check(text)
