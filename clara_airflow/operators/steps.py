"""build_step_task(): one Clara operator as a Docker or Kubernetes step task (the provider operators
are imported only here, lazily, when a DAG with that backend is built)."""

from __future__ import annotations

from typing import Any

from clara_airflow.backends.layout import step_user
from clara_airflow.compiler.plan import PipelinePlan, ServicePlan, StepPlan
from clara_airflow.services.heartbeat import heartbeat_interval


class StepTasks:
    """Builds the step tasks of one DAG; deployment options are checked once, when the DAG is built
    (a bad ``step_user`` or ``service_heartbeat`` fails the build, not a run at 2 a.m.)."""

    def __init__(self, backend: str, options: dict[str, Any]) -> None:
        self.backend = backend
        self.options = options
        step_user(options.get("step_user"), local=backend == "docker")
        self.heartbeat = heartbeat_interval(options.get("service_heartbeat"))

    def build(self, step: StepPlan, plan: PipelinePlan) -> Any:
        services = _service_refs(step, plan)
        parameters = [list(p) for p in plan.parameters]
        if self.backend == "kubernetes":
            from clara_airflow.operators.kubernetes_step import ClaraKubernetesPodOperator

            return ClaraKubernetesPodOperator(
                task_id=step.name, step=step, parameters=parameters, services=services, options=self.options,
                pull_secrets=list(plan.pull_secrets), doc_md=step.description or None)
        from clara_airflow.operators.docker_step import ClaraDockerOperator

        return ClaraDockerOperator(
            task_id=step.name, step=step, parameters=parameters, output_root=plan.settings["payload.output_root"],
            network=self.options["network"], docker_url=self.options["docker_url"], services=services,
            payload_root=self.options.get("payload_root"), options=self.options, heartbeat=self.heartbeat,
            step_user=self.options.get("step_user"), doc_md=step.description or None)


def _service_refs(step: StepPlan, plan: PipelinePlan) -> dict[str, ServicePlan]:
    return {use.service: plan.service(use.service) for use in step.services}
