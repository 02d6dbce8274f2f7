"""DicomExportOperator: Clara's ``register-results`` (``--agent ClaraSCU``) as a built-in task that sends
every DICOM file of its inputs to each configured destination by C-STORE."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowException
from clara_airflow.backends.layout import claim_run_folder, host_source
from clara_airflow.batch.run import branch_study, study_folder
from clara_airflow.compiler.plan import StepPlan
from clara_airflow.dicom.config import load_config
from clara_airflow.dicom.export import dicom_files, send_files
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
        files = dicom_files(folders)
        if not files:
            raise ClaraAirflowError(f"no DICOM files in its inputs ({', '.join(folders)}); the operator before it "
                                    "must write DICOM Part 10 files")
        results = []
        for name in self.step.export:
            if name not in config.destinations:
                raise ClaraAirflowError(f"destination {name} is no longer in {deployment.dicom_config}")
            sent = send_files(files, name, config.destinations[name], calling_aet=config.listen.ae_title)
            self.log.info("sent %d instances to %s in %.2f s (%d tries)", sent.instances, name, sent.seconds,
                          sent.attempts)
            results.append({"destination": name, "instances": sent.instances, "seconds": round(sent.seconds, 3)})
        return results
