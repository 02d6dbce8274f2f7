"""The batch tasks of a pipeline with ``x-airflow.batch``: select the run's studies, record how each
study's branch ended, and summarise the run. The decisions are in :mod:`clara_airflow.batch.run`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowException, run_state
from clara_airflow.backends.layout import claim_run_folder, run_folder
from clara_airflow.batch.run import ledger_for, select_studies, study_outcome, summarise, write_summary
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.settings import Options

# The contract between the batch tasks: one owner, here.
SELECT = "select_studies"
BRANCH = "study"
RECORD = "record"
SUMMARY = "batch_summary"
LABEL = "{{ clara_study }}"  # map_index_template: the grid shows each branch by its study's name
SKIPPED_KEY = "skipped"


def resolve_study(study: Any, context: Any) -> dict[str, str]:
    """This branch's ``{"study", "folder"}`` (a mapped-task-group argument), or ``{}`` outside batch mode."""
    value = study.resolve(context) if hasattr(study, "resolve") else study
    return dict(value) if isinstance(value, dict) else {}


def label(context: Any, study: dict[str, str]) -> None:
    context["clara_study"] = study.get("study") or os.path.basename(study.get("folder", "")) or "payload"


class SelectStudiesOperator(BaseOperator):
    """Claims this run's studies in the pipeline's ledger and returns them, one mapped branch each.

    A run triggered with ``clara_payload`` processes just that folder, as a pipeline without batch mode
    would: one branch, no ledger.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#b3d4fc"

    def __init__(self, *, options: Options, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = options

    def execute(self, context: Any) -> list[dict[str, str]]:
        payload = dict(context["params"]).get("clara_payload")
        if payload:
            self.log.info("clara_payload %s given: processing that folder only (no batch)", payload)
            context["ti"].xcom_push(key=SKIPPED_KEY, value={})
            return [{"study": "", "folder": str(payload)}]
        settings, dag_id = self.options.pipeline, context["dag"].dag_id
        ledger = ledger_for(settings.payload.output_root, dag_id, settings.retries)
        try:
            chosen = select_studies(settings.batch, ledger, context["run_id"],
                                    lambda other: run_state(dag_id, other), warn=self.log.warning)
        except ClaraAirflowError as exc:
            raise AirflowException(f"{SELECT}: {exc}") from None
        self.log.info("%d studies for this run, %d skipped, %d still arriving: %s", len(chosen.studies),
                      len(chosen.skipped), len(chosen.waiting), ", ".join(s["study"] for s in chosen.studies) or "-")
        for name, why in chosen.skipped.items():
            self.log.info("skipped %s: %s", name, why)
        context["ti"].xcom_push(key=SKIPPED_KEY, value=chosen.skipped)
        return chosen.studies


class RecordStudyOperator(BaseOperator):
    """The last task of a study's branch (runs whatever happened): done, failed (offered again) or given up.

    :param steps: the branch's step task ids.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0e0e0"

    def __init__(self, *, steps: list[str], options: Options, study: Any = None, **kwargs: Any) -> None:
        super().__init__(trigger_rule="all_done", map_index_template=LABEL, **kwargs)
        self.steps = steps
        self.options = options
        self.study = study

    def execute(self, context: Any) -> dict[str, Any]:
        ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
        study = resolve_study(self.study, context)
        label(context, study)
        found = ti.get_task_states(dag_id=dag_id, map_index=ti.map_index, task_ids=self.steps, run_ids=[run_id])
        ok = study_outcome(found.get(run_id, {}), len(self.steps))
        settings = self.options.pipeline
        output = run_folder(settings.payload.output_root, dag_id, run_id)
        if not study.get("study"):
            return {"study": context["clara_study"], "state": "success" if ok else "failed", "seconds": 0.0,
                    "output": str(output)}
        output = output / study["study"]
        ledger = ledger_for(settings.payload.output_root, dag_id, settings.retries)
        _, claim = ledger.current(study["study"])
        seconds = time.time() - claim.at if claim is not None and claim.at else 0.0
        entry = ledger.finish(study["study"], run_id, ok=ok, seconds=seconds, output=str(output))
        if entry is None:
            self.log.warning("study %s is no longer held by this run; its outcome is not recorded", study["study"])
            state = "lost"
        else:
            state = {"done": "success"}.get(entry.state, entry.state)
            self.log.info("study %s: %s (%d failed runs so far)", study["study"], entry.state, entry.failures)
        return {"study": study["study"], "state": state, "seconds": round(seconds, 3), "output": str(output)}


class BatchSummaryOperator(BaseOperator):
    """Writes ``batch-summary.json`` into the run's folder and fails the run when any study failed."""

    template_fields: Sequence[str] = ()
    ui_color = "#b3d4fc"

    def __init__(self, *, record: str, options: Options, **kwargs: Any) -> None:
        super().__init__(trigger_rule="all_done", **kwargs)
        self.record = record
        self.options = options

    def execute(self, context: Any) -> dict[str, Any]:
        ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
        pulled = ti.xcom_pull(task_ids=self.record)
        records = pulled if isinstance(pulled, list) else [pulled]
        selected = ti.xcom_pull(task_ids=SELECT) or []
        skipped = ti.xcom_pull(task_ids=SELECT, key=SKIPPED_KEY) or {}
        if ti.xcom_pull(task_ids=SELECT) is None:
            raise AirflowException(f"{SUMMARY}: {SELECT} did not run; see its log")
        done = {str(r["study"]) for r in records if r}
        records += [{"study": s["study"], "state": "failed", "seconds": 0.0, "output": ""}
                    for s in selected if s["study"] and s["study"] not in done]
        summary = summarise(records, skipped)
        batch = any(s["study"] for s in selected) or not selected
        if batch:
            folder = claim_run_folder(self.options.pipeline.payload.output_root, dag_id, run_id)
            self.log.info("summary: %s", write_summary(folder, summary))
        self.log.info("%d succeeded, %d failed, %d skipped", summary["succeeded"], summary["failed"],
                      summary["skipped"])
        if summary["failed"]:
            failed = ", ".join(f"{r['study']} ({r['state']})" for r in summary["studies"] if r["state"] != "success")
            raise AirflowException(f"{summary['failed']} of {len(summary['studies'])} studies failed: {failed}; "
                                   "each failed study is offered again to the next run (x-airflow.retries)")
        return summary
