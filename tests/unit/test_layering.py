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
                assert name.split(".")[1] in ("spec", "compiler", "errors", "settings"), f"{path.name} imports {name}"


def test_loading_and_compiling_pulls_in_no_backend() -> None:
    code = ("import sys, glob\n"
            "from clara_airflow.spec.load import load_pipeline\n"
            "from clara_airflow.compiler.compiler import compile_pipeline\n"
            "from clara_airflow import cli\n"
            f"[compile_pipeline(load_pipeline(p)) for p in glob.glob({str(REPO / 'tests/fixtures/shared-pipelines/*.yaml')!r})]\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'docker', 'kubernetes')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# STYLE.md's order: a module may import only from its own layer or the layers before it.
RANK = {"errors": 0, "airflow_compat": 0, "provider_info": 0, "__init__": 0, "settings": 1, "spec": 2,
        "compiler": 3, "backends": 4, "services": 5, "batch": 5, "dicom": 5, "operators": 6, "dag": 7, "loader": 8, "plugin": 9, "cli": 9, "cli_imaging": 9, "priority": 6}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_imports_only_downwards(path) -> None:  # type: ignore[no-untyped-def]
    relative = path.relative_to(PACKAGE).with_suffix("")
    own = relative.parts[0] if len(relative.parts) > 1 or relative.name != "__init__" else "__init__"
    for name in imported_modules(path):  # ast.walk: imports inside functions count too
        if name.startswith("clara_airflow"):
            other = layer_of(name)
            assert RANK[other] <= RANK[own], f"{relative} ({own}) imports {name} ({other}), a layer above it"


def test_no_module_is_much_over_300_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in long.items() if v > 320} == {}
