"""The teardown of a Clara DAG run: releases the run's service leases and refreshes ``last_used``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.operators.ensure_service import XCOM_KEY
from clara_airflow.services.leases import release_lease
from clara_airflow.services.records import touch


class ReleaseLeasesOperator(BaseOperator):
    """Runs as a teardown, whatever the state of the steps; never stops a service (they are shared).

    :param services: compile-time service id -> ensure task id.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0e0e0"

    def __init__(self, *, services: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services

    def execute(self, context: Any) -> None:
        ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
        for sid, task_id in self.services.items():
            pushed = ti.xcom_pull(task_ids=task_id, key=XCOM_KEY) or {}
            run_sid = pushed.get("id", sid)
            release_lease(run_sid, dag_id, run_id)
            touch(run_sid, dag_id)
            self.log.info("released the lease of %s on clara-svc-%s", run_id, run_sid)
