"""The Docker step operator's decisions, without an engine: a vanished service is restarted exactly as
its ensure task would (same data folder, timeout, record), and a lost service is named in the error."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

import pytest

from clara_airflow.backends.base import ServiceInstance
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.services.ensure import RunRef
from clara_airflow.services.records import service_view
from clara_airflow.spec.load import load_pipeline
from tests.helpers import VALID, make_options
from tests.memory import MemoryStore

# An explicit deployment id: unset, execute() would make one in the metadata database's Variables, which
# these unit tests do not have when they run on their own (mutation.sh runs them so).
OPTIONS = make_options({"services.data_dir": "/srv/clara-data", "services.start_timeout": 77,
                        "services.idle_ttl": 999, "network": "net-x", "docker_url": "unix://var/run/docker.sock",
                        "deployment_id": "unit-tests"})


@pytest.fixture
def step_op(monkeypatch: Any) -> Any:
    from clara_airflow.operators import docker_step as docker_operator

    plan = compile_pipeline(load_pipeline(next(p for p in VALID if p.name.startswith("04-"))))
    step = next(s for s in plan.steps if s.services)
    svc = plan.service(step.services[0].service)
    made: list[Any] = []

    class FakeManager:
        def __init__(self, options: Any) -> None:
            made.append(options)
            self.ensure = MagicMock(return_value=ServiceInstance(svc.id, f"clara-svc-{svc.id}", True, "c"))
            FakeManager.last = self

        def status(self, sid: str) -> str:
            return "exited"

    store = MemoryStore()
    monkeypatch.setattr(docker_operator, "DockerServiceManager", FakeManager)
    monkeypatch.setattr("clara_airflow.services.ensure.variable_store", lambda: store)
    op = docker_operator.ClaraDockerOperator(task_id=step.name, step=step, parameters=[],
                                             services={svc.id: svc}, options=OPTIONS)
    return op, svc, made, FakeManager, store


def test_a_vanished_service_is_restarted_with_the_ensure_tasks_settings_and_recorded(step_op: Any) -> None:
    op, svc, made, fake, store = step_op
    op._recheck_services({}, RunRef("knee-xray-grading", "run-1"))
    assert made[0].pipeline.services.data_dir == "/srv/clara-data" and made[0].deployment.network == "net-x"
    kwargs = fake.last.ensure.call_args.kwargs
    assert 70 < kwargs["timeout"] <= 77
    view = service_view(svc.id, store)
    assert view.record is not None and [u.idle_ttl for u in view.uses] == [999]
    assert store.keys("clara_lease_"), "the restarting run holds a lease"


def test_a_step_that_lost_its_service_says_so(step_op: Any) -> None:
    op, svc, *_ = step_op
    op.service_ids = (svc.id,)
    text = op._lost_services()
    assert f"service clara-svc-{svc.id} is exited: it stopped while this step ran" in text
    assert "retried" in text


@pytest.mark.parametrize("error, retried", [("conf", False), ("service", True)])
def test_bad_run_input_fails_at_once_and_a_service_failure_is_retried(step_op: Any, monkeypatch: Any,
                                                                      error: str, retried: bool) -> None:
    """A hostile or mistyped run conf is the same on every try: AirflowFailException skips the retries.
    A service that would not start may start next time: a plain AirflowException keeps them."""
    from clara_airflow.airflow_compat import AirflowException, AirflowFailException
    from clara_airflow.errors import CompileError, ServiceError

    op, *_ = step_op
    exc = CompileError("unknown parameter 'x'") if error == "conf" else ServiceError("did not answer")
    monkeypatch.setattr(op, "_prepare", MagicMock(side_effect=exc))
    with pytest.raises(AirflowException, match=f"operator '{op.task_id}'") as caught:
        op.execute({"params": {}, "ti": MagicMock(), "run_id": "run-1"})
    assert isinstance(caught.value, AirflowFailException) is not retried


def test_bad_service_parameters_fail_the_ensure_at_once(monkeypatch: Any) -> None:
    from clara_airflow.airflow_compat import AirflowFailException
    from clara_airflow.operators.ensure_service import EnsureServiceOperator

    plan = compile_pipeline(load_pipeline(next(p for p in VALID if p.name.startswith("04-"))))
    op = EnsureServiceOperator(task_id="ensure", service=plan.services[0], parameters=[], options=OPTIONS)
    context = {"params": {"x": "1"}, "ti": MagicMock(), "run_id": "run-1", "dag": MagicMock(dag_id="d")}
    with pytest.raises(AirflowFailException, match="unknown parameter 'x'"):
        op.execute(context)
