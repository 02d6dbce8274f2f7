"""What the lifecycle tests share: a service, its instance, a fake manager, and the ``store`` fixture
(an in-memory Variable store, one fake Docker manager, and run states the test decides)."""

from __future__ import annotations

import json
import logging
from typing import Any
from unittest.mock import MagicMock

import pytest

from clara_airflow.backends.base import ServiceInstance, ServiceManager
from clara_airflow.compiler.identity import variable_key
from clara_airflow.services import admin, leases
from clara_airflow.services.records import write_record, write_use
from tests.helpers import busybox_service, make_options
from tests.memory import MemoryStore

SID = "abcdefabcdef"
LOG = logging.getLogger("test")


def svc(name: str = "svc", port: int = 8080) -> Any:
    return busybox_service(SID, "true", port, name=name)


def instance() -> ServiceInstance:
    return ServiceInstance(sid=SID, host=f"clara-svc-{SID}", created=True, ref="c1",
                           started_at="2026-01-01T00:00:00.123456789Z")


def manager(state: str = "running") -> Any:
    fake = MagicMock(spec=ServiceManager)
    fake.ensure.return_value = instance()
    fake.status.return_value = state
    fake.stop.return_value = True
    fake.list_managed.return_value = {}
    fake.list_steps.return_value = []
    return fake


@pytest.fixture
def store(monkeypatch: Any) -> MemoryStore:
    """An in-memory Variable store, one fake Docker manager, and run states the test decides."""
    memory = MemoryStore()
    states: dict[tuple[str, str], str] = {}
    fake = manager()
    monkeypatch.setattr(admin, "manager_for", lambda row: fake)
    monkeypatch.setattr(admin, "managers", lambda backends=None: {"docker": fake})
    monkeypatch.setattr(admin, "_options", lambda: make_options({"remove_orphans": False,
                                                                 "services.start_timeout": 300, "backend": "docker"}))
    monkeypatch.setattr("clara_airflow.airflow_compat.run_state",
                        lambda dag_id, run_id: states.get((dag_id, run_id), "gone"))
    monkeypatch.setattr(leases, "live_leases", _live_leases_with(states))
    monkeypatch.setattr(admin, "live_leases", _live_leases_with(states))
    memory.states = states  # type: ignore[attr-defined]
    memory.manager = fake  # type: ignore[attr-defined]
    return memory


def _live_leases_with(states: dict[tuple[str, str], str]) -> Any:
    original = leases.__dict__["live_leases"]

    def live(sid: str, store: Any = None, state_of: Any = None) -> Any:
        return original(sid, store, state_of=lambda d, r: states.get((d, r), "gone"))
    return live


def record_old(store: MemoryStore, last_used: str = "2020-01-01T00:00:00+00:00", ttl: int = 60) -> None:
    write_record(svc(), instance(), backend="docker", location={}, store=store)
    write_use(svc(), dag_id="dag-a", connections={"SVC_URI": f"clara-svc-{SID}:8080"}, idle_ttl=ttl, store=store)
    key = next(k for k in store.data if k.startswith("clara_use_"))
    store.data[key] = json.dumps({**json.loads(store.data[key]), "last_used": last_used})
    store.data[variable_key(SID)] = json.dumps({**json.loads(store.data[variable_key(SID)]), "last_used": last_used})


