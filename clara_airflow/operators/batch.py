"""The batch tasks of a pipeline with ``x-airflow.batch``: select the run's studies, record how each
study's branch ended, and summarise the run. The decisions are in :mod:`clara_airflow.batch.run`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowException, max_map_length, plain_state, run_state
from clara_airflow.backends.layout import claim_run_folder, run_folder
from clara_airflow.batch.run import (
    FAILED,
    NOT_RUN,
    SUCCESS,
    branch_study,
    ledger_for,
    select_studies,
    study_outcome,
    summarise,
    write_summary,
)
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.failures import ERROR_KEY
from clara_airflow.settings import Options

# The contract between the batch tasks: one owner, here.
SELECT = "select_studies"
BRANCH = "study"
RECORD = "record"
SUMMARY = "batch_summary"
LABEL = "{{ clara_study }}"  # map_index_template: the grid shows each branch by its study's name
SKIPPED_KEY = "skipped"


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
        mappable = max_map_length()
        if mappable < settings.batch.max_studies:
            self.log.warning("max_studies is %d but Airflow maps at most %d branches per run ([core] "
                             "max_map_length): this run takes at most %d studies; the rest wait for the next run",
                             settings.batch.max_studies, mappable, mappable)
        try:
            chosen = select_studies(settings.batch, ledger, context["run_id"],
                                    lambda other: run_state(dag_id, other), warn=self.log.warning, limit=mappable)
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
        study = branch_study(self.study, context)
        found = ti.get_task_states(dag_id=dag_id, map_index=ti.map_index, task_ids=self.steps, run_ids=[run_id])
        outcome = study_outcome(found.get(run_id, {}), len(self.steps))
        settings = self.options.pipeline
        output = run_folder(settings.payload.output_root, dag_id, run_id)
        if not study.get("study"):
            return {"study": context["clara_study"], "state": SUCCESS if outcome == SUCCESS else FAILED,
                    "seconds": 0.0, "output": str(output)}
        output = output / study["study"]
        ledger = ledger_for(settings.payload.output_root, dag_id, settings.retries)
        _, claim = ledger.current(study["study"])
        seconds = time.time() - claim.at if claim is not None and claim.at else 0.0
        if outcome == NOT_RUN:
            entry = ledger.release(study["study"], run_id, "its steps did not run: something outside the study "
                                   "failed (see the clara_services tasks) or the run stopped first")
        else:
            entry = ledger.finish(study["study"], run_id, ok=outcome == SUCCESS, seconds=seconds, output=str(output))
        if entry is None:
            self.log.warning("study %s is no longer held by this run; its outcome is not recorded", study["study"])
            state = "lost"
        else:
            state = {"done": SUCCESS}.get(entry.state, entry.state)
            self.log.info("study %s: %s (%d failed runs so far)", study["study"], entry.state, entry.failures)
        return {"study": study["study"], "state": state, "seconds": round(seconds, 3), "output": str(output)}


class BatchSummaryOperator(BaseOperator):
    """Writes ``batch-summary.json`` into the run's folder; fails the run when any study failed, when a
    service could not be ensured (with the ensure task's own error), or when studies went back untouched.

    :param ensure: the ensure tasks' ids (their failure is not the studies' fault).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#b3d4fc"

    def __init__(self, *, record: str, options: Options, ensure: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(trigger_rule="all_done", **kwargs)
        self.record = record
        self.options = options
        self.ensure = list(ensure)

    def execute(self, context: Any) -> dict[str, Any]:
        ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
        selected = ti.xcom_pull(task_ids=SELECT)
        if selected is None:
            raise AirflowException(f"{SUMMARY}: {SELECT} did not run; see its log")
        pulled = ti.xcom_pull(task_ids=self.record)
        records = [r for r in (pulled if isinstance(pulled, list) else [pulled]) if r]
        skipped = ti.xcom_pull(task_ids=SELECT, key=SKIPPED_KEY) or {}
        settings = self.options.pipeline
        done = {str(r["study"]) for r in records}
        ledger = ledger_for(settings.payload.output_root, dag_id, settings.retries)
        for chosen in selected:  # a branch that never recorded: its study goes back untouched
            if chosen["study"] and chosen["study"] not in done:
                entry = ledger.release(chosen["study"], run_id, "its branch did not run")
                records.append({"study": chosen["study"], "state": "waiting" if entry else "lost", "seconds": 0.0,
                                "output": ""})
        summary = summarise(records, skipped)
        if any(s["study"] for s in selected) or not selected:
            folder = claim_run_folder(settings.payload.output_root, dag_id, run_id)
            self.log.info("summary: %s", write_summary(folder, summary))
        self.log.info("%d succeeded, %d failed, %d given back (waiting), %d skipped", summary["succeeded"],
                      summary["failed"], summary["waiting"], summary["skipped"])
        broken = self._failed_services(ti, dag_id, run_id)
        if broken:
            raise AirflowException("; ".join(broken) + f". {summary['waiting']} studies went back to waiting with "
                                   "their attempts unchanged; the next run takes them once the service starts")
        if summary["failed"] or summary["waiting"]:
            failed = ", ".join(f"{r['study']} ({r['state']})" for r in summary["studies"] if r["state"] != SUCCESS)
            raise AirflowException(f"{summary['failed']} of {len(summary['studies'])} studies failed and "
                                   f"{summary['waiting']} went back to waiting: {failed}; a failed study is offered "
                                   "again to the next run (x-airflow.retries), a waiting one is taken as new")
        return summary

    def _failed_services(self, ti: Any, dag_id: str, run_id: str) -> list[str]:
        """'<ensure task> failed: <its error>' for each ensure task of this run that failed."""
        if not self.ensure:
            return []
        found = ti.get_task_states(dag_id=dag_id, task_ids=self.ensure, run_ids=[run_id]).get(run_id, {})
        failed = [task for task, state in found.items() if plain_state(state) in (FAILED, "upstream_failed")]
        return [f"{task} failed: {ti.xcom_pull(task_ids=task, key=ERROR_KEY) or 'see its log'}" for task in sorted(failed)]
