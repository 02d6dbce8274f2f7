"""spec/ and compiler/ import no Airflow, docker or kubernetes: by AST, and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.helpers import REPO

BANNED = ("airflow", "docker", "kubernetes")
PACKAGE = REPO / "clara_airflow"


def imported_modules(path) -> list[str]:  # type: ignore[no-untyped-def]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", ["spec", "compiler"])
def test_layer_has_no_backend_imports_anywhere(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    for path in files:
        for name in imported_modules(path):
            assert name.split(".")[0] not in BANNED, f"{path.name} imports {name}"
            if name.startswith("clara_airflow."):
                assert name.split(".")[1] in ("spec", "compiler", "errors"), f"{path.name} imports {name}"


def test_loading_and_compiling_pulls_in_no_backend() -> None:
    code = ("import sys, glob\n"
            "from clara_airflow.spec.load import load_pipeline\n"
            "from clara_airflow.compiler.compiler import compile_pipeline\n"
            "from clara_airflow import cli\n"
            f"[compile_pipeline(load_pipeline(p)) for p in glob.glob({str(REPO / 'tests/fixtures/shared-pipelines/*.yaml')!r})]\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'docker', 'kubernetes')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
