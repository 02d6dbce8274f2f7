"""DicomExportOperator: Clara's ``register-results`` (``--agent ClaraSCU``) as a built-in task that sends
every DICOM file of its inputs to each configured destination by C-STORE. With any other agent
(``step.skip``) the task is skipped, with the reason in its log."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowException, AirflowSkipException
from clara_airflow.backends.layout import claim_run_folder, host_source
from clara_airflow.batch.run import branch_study, study_folder
from clara_airflow.compiler.plan import StepPlan
from clara_airflow.dicom.config import load_config
from clara_airflow.dicom.export import Found, SendError, dicom_files, send_files
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.step_inputs import run_inputs
from clara_airflow.settings import Options


class DicomExportOperator(BaseOperator):
    """:param step: the register-results step (``step.export``: its destination names)."""

    template_fields: Sequence[str] = ()
    ui_color = "#ffd8a8"

    def __init__(self, *, step: StepPlan, parameters: list[list[str]], options: Options, study: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.parameters = parameters
        self.options = options
        self.study = study

    def execute(self, context: Any) -> list[dict[str, Any]]:
        if self.step.skip:
            self.log.warning("skipped: %s", self.step.skip)
            raise AirflowSkipException(f"operator '{self.task_id}': {self.step.skip}")
        study = branch_study(self.study, context)
        try:
            return self._send(context, study.get("study", ""))
        except (ClaraAirflowError, OSError) as exc:
            raise AirflowException(f"operator '{self.task_id}' (register-results): {exc}") from None

    def _send(self, context: Any, study: str) -> list[dict[str, Any]]:
        settings, deployment = self.options.pipeline, self.options.deployment
        if not deployment.dicom_config:
            raise ClaraAirflowError("[clara] dicom_config is not set; it names the DICOM destinations")
        config = load_config(deployment.dicom_config)
        inbox = settings.batch.inbox or ""
        inputs = run_inputs(context, self.step, self.parameters, {}, payload_root=deployment.payload_root, local=True,
                            reserved=(settings.payload.output_root, settings.services.data_dir),
                            rules=settings.parameters, study=(os.path.join(inbox, study), inbox) if study else None)
        run_dir = claim_run_folder(settings.payload.output_root, context["dag"].dag_id, context["run_id"])
        if study:
            run_dir = study_folder(run_dir, study)
        folders = [host_source(m, run_dir, inputs.payload) for m in self.step.mounts if m.kind in ("payload", "upstream")]
        found = dicom_files(folders)
        self._skipped(found)
        if not found.files:
            raise ClaraAirflowError(f"no DICOM files in its inputs ({', '.join(folders)}); the operator before it "
                                    f"must write DICOM Part 10 files ({found.skipped} other entries skipped)")
        for name in self.step.export:
            if name not in config.destinations:
                raise ClaraAirflowError(f"destination {name} is no longer in {deployment.dicom_config}")
        results, failures = [], []
        for name in self.step.export:
            row = {"destination": name, "sent": 0, "failed": 0, "skipped": found.skipped}
            try:
                sent = send_files(found.files, name, config.destinations[name], calling_aet=config.listen.ae_title)
                row.update(sent=sent.instances, seconds=round(sent.seconds, 3), tries=sent.attempts)
            except SendError as exc:
                failures.append(str(exc))
                row.update(sent=exc.sent, failed=exc.failed)
                self.log.error("%s", exc)
            results.append(row)
        for row in results:  # the last lines of the log: one per destination
            self.log.info("destination %s: sent %d / failed %d / skipped %d", row["destination"], row["sent"],
                          row["failed"], row["skipped"])
        if failures:  # Clara's failureThreshold: any instance that finally failed fails the task
            raise ClaraAirflowError("; ".join(failures))
        return results

    def _skipped(self, found: Found) -> None:
        for link in found.links:
            self.log.warning("not sent: %s is a symbolic link (only files the pipeline wrote are sent)", link)
        for path in found.special:
            self.log.warning("not sent: %s is not a regular file", path)
