"""Airflow provider metadata: makes ``airflow providers list`` show clara-airflow."""

from __future__ import annotations

from typing import Any

from clara_airflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "clara-airflow",
        "name": "Clara pipelines (clara-airflow)",
        "description": "Runs NVIDIA Clara Deploy pipeline YAML as Airflow DAGs with shared services.",
        "versions": [__version__],
        "operators": [{"integration-name": "Clara", "python-modules": [
            "clara_airflow.operators.ensure_service", "clara_airflow.operators.docker_step",
            "clara_airflow.operators.kubernetes_step", "clara_airflow.operators.release_leases",
            "clara_airflow.operators.pipeline_error", "clara_airflow.operators.batch"]}],
        "integrations": [{"integration-name": "Clara", "external-doc-url":
                          "https://github.com/NVIDIA/clara-platform", "tags": ["software"]}],
    }
