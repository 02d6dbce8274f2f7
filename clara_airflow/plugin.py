"""Airflow plugin entry point of clara-airflow."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class ClaraPlugin(AirflowPlugin):
    """Registers clara-airflow with Airflow (the services page is added by the UI layer)."""

    name = "clara"
