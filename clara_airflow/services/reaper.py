"""The ``clara_service_reaper`` maintenance DAG: stops idle services, reports orphans."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clara_airflow.settings import Deployment
from clara_airflow.spec.model import REAPER_DAG_ID

__all__ = ["REAPER_DAG_ID", "build_reaper_dag", "reap"]


def clara_cleanup(**_: Any) -> None:
    """Retention (imported here, so parsing the dags folder stays light)."""
    from clara_airflow.services.cleanup import cleanup_task

    cleanup_task()


def reap(**_: Any) -> list[str]:
    from clara_airflow.services.admin import collect_services

    lines = collect_services()
    for line in lines:
        print(line)
    return lines


def build_reaper_dag(deployment: Deployment) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    with DAG(
        dag_id=REAPER_DAG_ID, schedule=deployment.reaper_schedule,
        start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, max_active_runs=1,
        is_paused_upon_creation=False, tags=["clara", "maintenance"],
        description="Stops Clara services idle past their TTL and reports orphaned service instances.",
        doc_md=("Stops every shared Clara service whose `last_used` is older than its idle TTL "
                "(`services.idle_ttl`) and that no running DAG run holds a lease on. Services without a "
                "Variable record are reported, and removed when `[clara] remove_orphans = True`. "
                "`clara_cleanup` applies `x-airflow.retention`: run outputs and processed studies older "
                "than it are deleted (`clara-airflow cleanup --dry-run` shows what would go)."),
    ) as dag:
        PythonOperator(task_id="reap", python_callable=reap)
        PythonOperator(task_id="clara_cleanup", python_callable=clara_cleanup,
                       doc_md="Deletes what x-airflow.retention says is old enough (docs/retention.md).")
    return dag
