"""The README's (and docs/*.md's) examples work when copied: every fenced block marked ``<!-- checked -->`` is checked.

INI blocks load through Airflow's own config parser and then the project's ``[clara]`` parser (no value
may carry an inline comment); YAML blocks validate (a bare ``x-airflow:`` block inside a minimal
pipeline); bash blocks pass ``bash -n``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BASE, REPO

_BLOCK = re.compile(r"<!-- checked -->\n```(\w+)\n(.*?)\n```", re.S)


def blocks() -> list[tuple[str, str]]:
    """The checked blocks of the README and of docs/*.md."""
    found = _BLOCK.findall((REPO / "README.md").read_text())
    assert len(found) >= 9, "the README lost its checked examples"
    for page in sorted((REPO / "docs").glob("*.md")):
        found += _BLOCK.findall(page.read_text())
    return found


@pytest.mark.parametrize(("kind", "text"), [b for b in blocks() if b[0] == "ini"])
def test_ini_blocks_load_through_airflows_parser(kind: str, text: str) -> None:
    from airflow.configuration import AirflowConfigParser

    from clara_airflow.spec.defaults import parse_config

    parser = AirflowConfigParser()
    parser.read_string(text)
    section = {k: str(v) for k, v in parser.getsection("clara").items()}
    assert not [k for k, v in section.items() if ";" in v or "#" in v], "an inline comment became part of a value"
    settings, options = parse_config(section)  # raises, listing every bad option, on a value that is not valid
    assert options.strict is False and settings.get("timeout", 1800) == 1800


@pytest.mark.parametrize(("kind", "text"), [b for b in blocks() if b[0] == "yaml"])
def test_yaml_blocks_validate(kind: str, text: str, tmp_path: Path) -> None:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.load import load_pipeline

    body = text if "api-version" in text else BASE + text
    path = tmp_path / "readme.yaml"
    path.write_text(body)
    compile_pipeline(load_pipeline(path))


@pytest.mark.parametrize(("kind", "text"), [b for b in blocks() if b[0] == "bash"])
def test_bash_blocks_parse(kind: str, text: str) -> None:
    result = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
