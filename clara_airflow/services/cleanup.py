"""Retention, applied: ``clara-airflow cleanup [--dry-run] [--json]`` and the reaper DAG's
``clara_cleanup`` task. Every pipeline of the dags folder is compiled for its settings; run states and
end dates come from Airflow (:func:`clara_airflow.airflow_compat.run_end`); what is deleted is decided
by :mod:`clara_airflow.batch.retention`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clara_airflow.batch.retention import Plan, apply, now, plan_groups, plan_outputs, plan_studies
from clara_airflow.errors import ClaraAirflowError, SpecError
from clara_airflow.settings import PipelineSettings

__all__ = ["cleanup", "cleanup_task"]

log = logging.getLogger("clara_airflow.retention")


def pipelines(dags_folder: Path, flat: dict[str, Any]) -> dict[str, PipelineSettings]:
    """DAG id -> settings of every pipeline file that compiles (broken ones are the loader's business)."""
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.defaults import load_defaults_file
    from clara_airflow.spec.load import load_pipeline
    from clara_airflow.spec.source import pipeline_files

    found: dict[str, PipelineSettings] = {}
    for path in pipeline_files(dags_folder):
        try:
            plan = compile_pipeline(load_pipeline(path), {**flat, **load_defaults_file(path.parent)})
        except (SpecError, ClaraAirflowError, OSError):
            continue
        found[plan.dag_id] = plan.settings
    return found


def cleanup(*, dry_run: bool, dags_folder: Path | None = None) -> tuple[Plan, list[str]]:
    """Plan (and unless ``dry_run``, apply) retention for every pipeline and the DICOM receiver's inbox."""
    from clara_airflow.airflow_compat import conf, run_end
    from clara_airflow.backends.registry import deployment_options
    from clara_airflow.batch.run import ledger_for

    flat, deployment = deployment_options()
    settings = pipelines(dags_folder or Path(conf.get("core", "dags_folder")), flat)
    plan, moment = Plan(), now()
    for dag_id, found in sorted(settings.items()):
        plan_outputs(plan, dag_id, found, run_end, moment)
        if found.batch.inbox:
            ledger = ledger_for(found.payload.output_root, dag_id, found.retries)
            plan_studies(plan, ledger, found.batch.inbox, found.retention.studies, moment)
    if deployment.dicom_config:
        from clara_airflow.dicom.config import load_config

        config = load_config(deployment.dicom_config)
        routes = {called: route.every_pipeline() for called, route in config.ae_titles.items()}
        plan_groups(plan, Path(config.inbox), routes,
                    lambda dag: settings[dag].retention.studies if dag in settings else None, run_end, moment)
    problems = [] if dry_run else apply(plan, log)
    return plan, problems


def cleanup_task() -> None:
    """The reaper DAG's ``clara_cleanup`` task: a failed deletion fails the task (with every path)."""
    plan, problems = cleanup(dry_run=False)
    log.info("retention: %d deleted (%d bytes), %d kept", len(plan.delete), plan.as_dict()["bytes"], len(plan.keep))
    if problems:
        raise ClaraAirflowError("retention could not delete:\n" + "\n".join(problems))
