"""StepTasks.build(): one Clara operator as a Docker or Kubernetes step task (the provider operators
are imported only here, lazily, when a DAG with that backend is built)."""

from __future__ import annotations

from typing import Any

from clara_airflow.backends.layout import step_user
from clara_airflow.compiler.plan import PipelinePlan, ServicePlan, StepPlan
from clara_airflow.operators.batch import LABEL
from clara_airflow.settings import Options


class StepTasks:
    """Builds the step tasks of one DAG. What depends on the backend is checked once, when the DAG is
    built (``step_user = worker`` is Docker only), so it fails the build, not a run at 2 a.m."""

    def __init__(self, backend: str, options: Options) -> None:
        self.backend = backend
        self.options = options
        step_user(options.deployment.step_user, local=backend == "docker")

    def build(self, step: StepPlan, plan: PipelinePlan, study: Any = None) -> Any:
        """:param study: batch mode: the branch's study (a mapped task group argument)."""
        services = _service_refs(step, plan)
        parameters = [list(p) for p in plan.parameters]
        batch = {"study": study, "map_index_template": LABEL} if study is not None else {}
        if step.export or step.skip:  # register-results: a built-in DICOM export (or a skip), no container
            from clara_airflow.operators.dicom_export import DicomExportOperator

            return DicomExportOperator(task_id=step.name, step=step, parameters=parameters, options=self.options,
                                       doc_md=step.description or None, **batch)
        if self.backend == "kubernetes":
            from clara_airflow.operators.kubernetes_step import ClaraKubernetesPodOperator

            return ClaraKubernetesPodOperator(
                task_id=step.name, step=step, parameters=parameters, services=services, options=self.options,
                pull_secrets=list(plan.pull_secrets), doc_md=step.description or None)
        from clara_airflow.operators.docker_step import ClaraDockerOperator

        return ClaraDockerOperator(task_id=step.name, step=step, parameters=parameters, services=services,
                                   options=self.options, doc_md=step.description or None, **batch)


def _service_refs(step: StepPlan, plan: PipelinePlan) -> dict[str, ServicePlan]:
    return {use.service: plan.service(use.service) for use in step.services}
