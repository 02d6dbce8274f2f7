"""EnsureServiceOperator: find or start one shared service, wait until it is ready, record it, push its
connection values to XCom for the steps that declare it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from clara_airflow.airflow_compat import AirflowSkipException
from clara_airflow.backends.registry import get_backend
from clara_airflow.compiler.identity import service_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.compiler.resolve import RUN_KEYS, parameter_values, resolve_service
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.operators.failures import ERROR_KEY, task_error
from clara_airflow.services.ensure import RunRef, ensure_service
from clara_airflow.services.identity import identified
from clara_airflow.settings import Options

# The contract between ensure tasks and the steps that use their service: one owner, here.
GROUP = "clara_services"
XCOM_KEY = "service"


def ensure_task_id(sid: str) -> str:
    """The id of a service's ensure task inside its group (``ensure_<id>``)."""
    return f"ensure_{sid}"


def ensure_task_path(sid: str) -> str:
    """The full task id steps pull from: ``clara_services.ensure_<id>``."""
    return f"{GROUP}.{ensure_task_id(sid)}"


def pull_services(ti: Any, sids: Any) -> dict[str, dict[str, Any]]:
    """What each ensure task pushed for this run (``{}`` for one that did not run)."""
    return {sid: ti.xcom_pull(task_ids=ensure_task_path(sid), key=XCOM_KEY) or {} for sid in sids}


class EnsureServiceOperator(BaseOperator):
    """Makes sure one service identity runs, then pushes ``{"id", "host", "connections", ...}`` as XCom
    ``service``.

    Idempotent: safe to retry, to clear, and to run from many DAG runs at once; the container or
    Kubernetes object name decides who starts the instance.

    :param service: the compiled ServicePlan or its dict (placeholders are substituted per run).
    :param parameters: the pipeline's (name, default) parameter pairs.
    :param options: the pipeline's settings (backend, start timeout, idle TTL, parameter rules) and
        the deployment's options.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#76b900"
    ui_fgcolor = "#ffffff"

    def __init__(self, *, service: ServicePlan, parameters: list[list[str]], options: Options,
                 studies_from: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.parameters = parameters
        self.options = options
        self.studies_from = studies_from  # batch mode: the task whose XCom lists the run's studies

    def execute(self, context: Any) -> dict[str, str]:
        if self.studies_from and not context["ti"].xcom_pull(task_ids=self.studies_from):
            raise AirflowSkipException("no studies in this run: the service is not needed")
        params = {k: v for k, v in dict(context["params"]).items() if k not in RUN_KEYS}
        run = RunRef(context["dag"].dag_id, context["run_id"])
        options = identified(self.options)  # what it starts carries the deployment's identity
        settings = options.pipeline
        location = {"network": options.deployment.network, "namespace": settings.namespace,
                    "deployment": options.deployment.deployment_id or ""}
        try:
            rules = settings.parameters
            svc = resolve_service(self.service, parameter_values(self.parameters, params, rules), rules)
            manager = get_backend(settings.backend, options).service_manager()
            result = ensure_service(svc, manager, run, backend=settings.backend, location=location,
                                    idle_ttl=settings.services.idle_ttl,
                                    start_timeout=settings.services.start_timeout, log=self.log)
        except ClaraAirflowError as exc:
            error = task_error(exc, f"service {service_name(self.service.id)} ({self.service.image}:{self.service.tag})")
            context["ti"].xcom_push(key=ERROR_KEY, value=str(error))  # a batch summary fails the run with it
            raise error from None
        self.log.info("service %s %s in %.3f s; connections: %s", result.host,
                      "started" if result.created else "reused", result.seconds, result.connections)
        context["ti"].xcom_push(key=XCOM_KEY, value=result.as_xcom())
        return result.connections
