"""What a step task works out when it starts, the same on every backend: the run's payload and
parameter values, the step with placeholders substituted, and its environment with the connection
values its ensure tasks pushed to XCom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clara_airflow.backends.layout import check_payload
from clara_airflow.compiler.plan import StepPlan
from clara_airflow.compiler.resolve import RUN_KEYS, Rules, parameter_values, resolve_step
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.ensure_service import ensure_task_path, pull_services


@dataclass(frozen=True)
class RunInputs:
    """:param values: parameter values by lower-cased name. :param env: the container's environment.
    :param service_ids: the ids of the service instances the step uses in this run."""

    payload: str
    values: dict[str, str]
    step: StepPlan
    env: dict[str, str]
    service_ids: tuple[str, ...] = ()


def run_inputs(context: Any, step: StepPlan, parameters: list[list[str]], services: dict[str, Any], *,
               payload_root: str | None, local: bool, reserved: tuple[str, ...] = (),
               rules: Rules | None = None, study: tuple[str, str] | None = None) -> RunInputs:
    """:param local: the payload folder must exist here (Docker); Kubernetes can only check the path.
    :param reserved: folders a payload may neither be inside nor contain (output root, service data).
    :param rules: ``x-airflow.parameters``, checked against the run's values.
    :param study: a batch branch's (study folder, inbox): the study is the payload, and lies in the inbox."""
    params = dict(context["params"])
    if study is not None:
        payload = check_payload(study[0], study[1], local=local, reserved=reserved)
    else:
        payload = check_payload(params.get("clara_payload"), payload_root, local=local, reserved=reserved)
    values = parameter_values(parameters, {k: v for k, v in params.items() if k not in RUN_KEYS}, rules)
    pushed = pull_services(context["ti"], services)
    missing = [sid for sid, data in pushed.items() if "connections" not in data]
    if missing:
        raise ClaraAirflowError(f"no connection values from {', '.join(ensure_task_path(s) for s in missing)}; "
                                "that task must succeed first")
    resolved = resolve_step(step, values, {sid: data["id"] for sid, data in pushed.items()}, rules)
    env = dict(resolved.variables)
    for use in resolved.services:
        connections = next(data["connections"] for data in pushed.values() if data["id"] == use.service)
        env.update({name: connections[conn] for name, conn in use.env})
    return RunInputs(payload, values, resolved, env, tuple(sorted({use.service for use in resolved.services})))
