"""spec/ and compiler/ import no Airflow, docker or kubernetes: by AST, and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

BANNED = ("airflow", "docker", "kubernetes")
PACKAGE = REPO / "clara_airflow"


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions: ``import a.b``, ``from a import
    b`` (as ``a`` and ``a.b``, so ``from clara_airflow import loader`` counts as the loader), relative
    imports resolved against the file's package, and ``importlib.import_module("...")`` or
    ``__import__("...")`` with a literal name."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else (node.module or "")
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names.append(node.args[0].value)
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
RANK = {"errors": 0, "airflow_compat": 0, "versions": 0, "durable": 0, "provider_info": 0, "__init__": 0, "settings": 1, "spec": 2,
        "compiler": 3, "backends": 4, "services": 5, "batch": 5, "dicom": 5, "operators": 6, "dag": 7, "loader": 8, "preload": 8, "plugin": 9, "cli": 9, "cli_imaging": 9, "priority": 6}


def layer_of(module: str) -> str:
    """The layer of ``clara_airflow.<x>...``: ``<x>`` when it is a module or package of ours, else the
    package itself (``from clara_airflow import __version__``)."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
        return parts[1]
    return "__init__"


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


# Airflow's public surface for us: the Task SDK and the providers' modules. Anything else of Airflow's
# (core models, configuration, the api-server's security, priority strategies) is read through
# airflow_compat.py, which says why and since when.
PUBLIC_AIRFLOW = ("airflow.sdk", "airflow.providers.")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_airflow_outside_the_task_sdk_only_through_airflow_compat(path: Path) -> None:
    if path.name == "airflow_compat.py":
        return
    for name in imported_modules(path):
        if name == "airflow" or name.startswith("airflow."):
            assert name.startswith(PUBLIC_AIRFLOW), f"{path.relative_to(PACKAGE)} imports {name}: read it through airflow_compat"


def test_every_folder_of_the_package_is_a_regular_package() -> None:
    folders = [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))]
    assert folders
    assert [str(p.relative_to(PACKAGE)) for p in folders if not (p / "__init__.py").exists()] == []


@pytest.mark.parametrize("line", [
    "from clara_airflow import loader",                      # package-level
    "from .. import loader",                                 # relative, the package
    "from ..loader import load_dags",                        # relative, a module
    "import importlib; importlib.import_module('clara_airflow.dag')",
    "__import__('clara_airflow.dag')",
])
def test_the_layering_check_sees_every_way_to_import(line: str, tmp_path: Path) -> None:
    """Planted in spec/: each must be reported as an import of a layer above."""
    fake = REPO / "clara_airflow" / "spec" / "_planted_for_test.py"
    fake.write_text(line + "\n")
    try:
        names = [n for n in imported_modules(fake) if n.startswith("clara_airflow")]
        assert any(RANK[layer_of(n)] > RANK["spec"] for n in names), names
    finally:
        fake.unlink()
