"""ensure_service(): find or start one service for one run, record it, hand back its connection values.

Plain code with no Airflow in it: the ensure task and a step whose service vanished both call it with
the same settings, so a restarted service gets the same data folder, timeout and record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from clara_airflow.backends.base import ServiceInstance, ServiceManager, connection_values
from clara_airflow.compiler.identity import service_name, volume_name
from clara_airflow.compiler.plan import ServicePlan
from clara_airflow.services import leases
from clara_airflow.services.leases import take_lease, wait_while_stopping
from clara_airflow.services.records import VariableStore, variable_store, write_record, write_use


@dataclass(frozen=True)
class RunRef:
    """The DAG run that uses a service (it holds a lease until its teardown)."""

    dag_id: str
    run_id: str


@dataclass(frozen=True)
class EnsureResult:
    """What the ensure task pushes to XCom ``service`` for the steps."""

    id: str
    host: str
    connections: dict[str, str]
    created: bool
    seconds: float

    def as_xcom(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "connections": self.connections, "created": self.created,
                "seconds": round(self.seconds, 4)}


def ensure_service(svc: ServicePlan, manager: ServiceManager, run: RunRef, *, backend: str,
                   location: dict[str, str], idle_ttl: int, start_timeout: float, log: Any,
                   store: VariableStore | None = None) -> EnsureResult:
    """Make sure ``svc`` (already resolved with the run's parameters) runs, for ``run``.

    Order matters (see :mod:`clara_airflow.services.leases`): the lease first, so no stopper can miss
    it; then wait out a stop under way; then a provisional record, so an instance created by a worker
    killed right after is a recorded service the reaper stops once idle, not an unknown orphan.
    """
    store = store or variable_store()
    deadline = time.monotonic() + start_timeout
    take_lease(svc.id, run.dag_id, run.run_id, store)
    wait_while_stopping(svc.id, store, deadline=deadline, log=log)
    provisional = ServiceInstance(sid=svc.id, host=service_name(svc.id), created=False, ref="",
                                  volumes={p: volume_name(svc.id, p) for _, p in svc.volumes})
    write_record(svc, provisional, backend=backend, location=location, store=store)
    began = time.perf_counter()
    def sole_user() -> bool:  # only this run's lease holds the service
        return all((h.dag_id, h.run_id) == (run.dag_id, run.run_id) for h in leases.live_leases(svc.id, store))

    instance = manager.ensure(svc, timeout=max(1.0, deadline - time.monotonic()), log=log, sole_user=sole_user)
    seconds = time.perf_counter() - began
    connections = connection_values(svc, instance.host)
    write_record(svc, instance, backend=backend, location=location, store=store)
    write_use(svc, dag_id=run.dag_id, connections=connections, idle_ttl=idle_ttl, store=store)
    return EnsureResult(svc.id, instance.host, connections, instance.created, seconds)
