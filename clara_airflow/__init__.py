"""clara-airflow: NVIDIA Clara Deploy pipeline definitions as Apache Airflow 3 DAGs."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_pipeline": "clara_airflow.spec.load",
    "compile_pipeline": "clara_airflow.compiler.compiler",
    "load_dags": "clara_airflow.loader",
    "build_dag": "clara_airflow.dag",
    "EnsureServiceOperator": "clara_airflow.operators.ensure_service",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Resolve public names lazily, so importing the package stays free of Airflow."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clara_airflow' has no attribute {name!r}")
