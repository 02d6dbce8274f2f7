"""Service lifecycle without an engine: records that lose nothing, leases that never release on doubt,
bad records that are shown and never acted on, and a reaper that never stops a held service.

Interleavings are driven by hooks and fakes, not sleeps.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from clara_airflow.backends.base import Managed, ServiceInstance, StepContainer
from clara_airflow.compiler.identity import variable_key
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services import admin, leases
from clara_airflow.services.ensure import RunRef, ensure_service
from clara_airflow.services.records import BadRecord, read_record, service_view, write_record, write_use
from tests.lifecycle import LOG, SID, instance, manager, record_old, svc
from tests.memory import MemoryStore


# -- defect 8: concurrent record writes lose nothing --------------------------------------------------
def test_sixteen_concurrent_records_lose_no_pipeline_connection_or_ttl() -> None:
    store = MemoryStore(delay=0.002)  # every read waits: read-modify-write cycles would interleave
    barrier = threading.Barrier(16)

    def use(n: int) -> None:
        barrier.wait()
        write_record(svc(), instance(), backend="docker", location={}, store=store)
        write_use(svc(f"svc{n}"), dag_id=f"dag-{n:02d}", connections={f"URI_{n}": f"clara-svc-{SID}:{n}"},
                  idle_ttl=100 + n, store=store)

    threads = [threading.Thread(target=use, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = service_view(SID, store).as_row()
    assert row["pipelines"] == [f"dag-{n:02d}" for n in range(16)]
    assert row["connections"] == {f"URI_{n}": f"clara-svc-{SID}:{n}" for n in range(16)}
    assert row["names"] == sorted(f"svc{n}" for n in range(16))
    assert row["idle_ttl"] == 115


# -- defect 9: records of the wrong shape -----------------------------------------------------------
@pytest.mark.parametrize("raw", ["[1, 2]", '"hello"', "{}", "not json", '{"id": 5}', "nul\x00l", "[" * 5000])
def test_a_bad_record_is_a_value_shown_as_bad_and_never_a_reason_to_stop(store: MemoryStore, raw: str) -> None:
    store.set(variable_key(SID), raw)
    assert isinstance(read_record(SID, store), BadRecord)
    (row,) = admin.list_services(store)
    assert row["bad"] and "bad record" in row["state"]
    report = admin.collect_services(ttl_override=0, store=store)
    assert report == [f"keeping clara-svc-{SID}: bad record ({row['bad'][0]}); the next run that uses it rewrites "
                      "it, or stop it with 'clara-airflow services stop'"]
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", ["[1, 2]", '"hello"', "{}", "garbage"])
def test_an_ensure_rewrites_a_bad_record_and_the_run_succeeds(raw: str) -> None:
    store = MemoryStore()
    store.set(variable_key(SID), raw)
    store.set(f"clara_use_{SID}_0000000000000000", raw)
    result = ensure_service(svc(), manager(), RunRef("dag-a", "run-1"), backend="docker", location={},
                            idle_ttl=300, start_timeout=5, log=LOG, store=store)
    assert result.connections == {"SVC_URI": f"clara-svc-{SID}:8080"}
    view = service_view(SID, store)
    assert view.record is not None and view.record.started_at == "2026-01-01T00:00:00+00:00"
    assert [u.dag_id for u in view.uses] == ["dag-a"]


def test_a_bad_lease_holds_the_service(store: MemoryStore) -> None:
    record_old(store)
    store.set(f"clara_lease_{SID}_feedfeedfeedfeed", '"hello"')
    (holder,) = leases.live_leases(SID, store)
    assert holder.state.startswith("bad lease")
    assert admin.collect_services(ttl_override=0, store=store) == [f"keeping clara-svc-{SID}: held by 1 DAG run(s)"]


# -- defect 6: an unknown run state never releases a lease ----------------------------------------------
@pytest.mark.parametrize(("state", "held"), [("running", True), ("queued", True), ("unknown", True),
                                             ("success", False), ("failed", False), ("gone", False)])
def test_only_an_ended_run_releases_its_lease(state: str, held: bool) -> None:
    store = MemoryStore()
    leases.take_lease(SID, "dag-a", "run-1", store)
    live = leases.live_leases(SID, store, state_of=lambda d, r: state)
    assert bool(live) is held
    assert bool(store.keys("clara_lease_")) is held


def test_a_failing_state_read_counts_as_unknown(monkeypatch: Any) -> None:
    from clara_airflow import airflow_compat

    monkeypatch.setattr(airflow_compat, "in_task", lambda: False)

    def boom(**_: Any) -> Any:
        raise ConnectionError("database is gone")

    monkeypatch.setattr("airflow.models.dagrun.DagRun.find", boom)
    assert airflow_compat.run_state("d", "r") == airflow_compat.UNKNOWN


# -- defect 4: check-then-act ------------------------------------------------------------------------
def test_the_reaper_keeps_a_service_a_run_takes_between_its_check_and_its_stop(store: MemoryStore) -> None:
    record_old(store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    row = admin.list_services(store)[0]
    with pytest.raises(ClaraAirflowError, match="in use by DAG runs: dag-b/run-9"):
        admin.stop_guarded(row, force=False, by="reaper", store=store,
                           after_intent=lambda: leases.take_lease(SID, "dag-b", "run-9", store))
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]
    assert store.get(leases.stop_key(SID)) is None, "the stop intent is always removed"


def test_the_reaper_pass_reports_the_race_and_keeps_the_service(store: MemoryStore, monkeypatch: Any) -> None:
    record_old(store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    original = admin.stop_guarded

    def racing(row: dict[str, Any], **kw: Any) -> str:
        return original(row, **kw, after_intent=lambda: leases.take_lease(SID, "dag-b", "run-9", store))

    monkeypatch.setattr(admin, "stop_guarded", racing)
    report = admin.collect_services(ttl_override=0, store=store)
    assert report == [f"keeping clara-svc-{SID}: a run took it while the reaper looked"]
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]


def test_an_ensure_that_meets_a_stop_waits_for_it_then_starts_the_service_again() -> None:
    store = MemoryStore()
    order: list[str] = []
    fake = manager()
    fake.ensure.side_effect = lambda *a, **k: order.append("ensure") or instance()
    leases.mark_stopping(SID, "reaper", store)

    def stopper() -> None:  # the reaper finishes its stop while the ensure waits
        while not store.keys("clara_lease_"):
            threading.Event().wait(0.01)
        order.append("stopped")
        leases.clear_stopping(SID, store)

    thread = threading.Thread(target=stopper)
    thread.start()
    ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={}, idle_ttl=60,
                   start_timeout=10, log=LOG, store=store)
    thread.join()
    assert order == ["stopped", "ensure"]


def test_a_stale_stop_intent_is_ignored() -> None:
    store = MemoryStore()
    store.set(leases.stop_key(SID), json.dumps({"service": SID, "by": "x", "since": "2020-01-01T00:00:00+00:00"}))
    assert leases.stopping_since(SID, store) is None and store.get(leases.stop_key(SID)) is None


def test_the_reaper_stops_an_idle_unheld_service_and_forgets_it(store: MemoryStore) -> None:
    record_old(store)
    (line,) = admin.collect_services(store=store)
    assert line.startswith(f"stopped clara-svc-{SID}; record cleared (idle ")
    store.manager.stop.assert_called_once_with(SID)  # type: ignore[attr-defined]
    assert store.keys("clara_") == []


@pytest.mark.parametrize("ttl_met", [False, True])
def test_the_idle_ttl_is_respected(store: MemoryStore, ttl_met: bool) -> None:
    from clara_airflow.services.records import now

    record_old(store, last_used="2020-01-01T00:00:00+00:00" if ttl_met else now(), ttl=3600)
    (line,) = admin.collect_services(store=store)
    assert line.startswith("stopped" if ttl_met else f"keeping clara-svc-{SID}: idle")


def test_services_stop_refuses_a_held_service_unless_forced(store: MemoryStore) -> None:
    record_old(store)
    leases.take_lease(SID, "dag-b", "run-9", store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    with pytest.raises(ClaraAirflowError, match="in use by DAG runs: dag-b/run-9"):
        admin.stop_service(SID, store=store)
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]
    assert admin.stop_service(SID, force=True, store=store).startswith(f"stopped clara-svc-{SID}")


# -- defect 5: orphans that are only starting ----------------------------------------------------------
@pytest.mark.parametrize(("age", "removed"), [(10.0, False), (299.0, False), (301.0, True)])
def test_an_unrecorded_instance_is_an_orphan_only_once_older_than_the_start_timeout(
        store: MemoryStore, age: float, removed: bool) -> None:
    store.manager.list_managed.return_value = {SID: Managed("running", age)}  # type: ignore[attr-defined]
    (line,) = admin.collect_services(remove_orphans=True, store=store)
    assert line.startswith("removed orphan" if removed else f"keeping clara-svc-{SID} (running (orphan")
    assert store.manager.stop.called is removed  # type: ignore[attr-defined]


def test_an_orphan_holding_a_lease_is_kept(store: MemoryStore) -> None:
    store.manager.list_managed.return_value = {SID: Managed("running", 9999.0)}  # type: ignore[attr-defined]
    leases.take_lease(SID, "dag-b", "run-9", store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    (line,) = admin.collect_services(remove_orphans=True, store=store)
    assert line.startswith(f"keeping clara-svc-{SID}") and not store.manager.stop.called  # type: ignore[attr-defined]


def test_orphans_are_listed(store: MemoryStore) -> None:
    store.manager.list_managed.return_value = {SID: Managed("exited", 9999.0)}  # type: ignore[attr-defined]
    (row,) = admin.list_services(store)
    assert row["orphan"] and row["state"] == "exited (orphan: no record)"
    assert admin.collect_services(store=store) == [f"found orphan clara-svc-{SID} (exited (orphan: no record)); "
                                                   "no Variable records it"]


# -- defect 10: step containers of dead runs -----------------------------------------------------------
def test_step_containers_of_ended_runs_are_removed_after_the_grace_period(store: MemoryStore) -> None:
    steps = [StepContainer("c1", "clara-a", "dag-a", "run-ended", "exited", 700.0),
             StepContainer("c2", "clara-b", "dag-a", "run-live", "running", 700.0),
             StepContainer("c3", "clara-c", "dag-a", "run-unknown", "created", 700.0),
             StepContainer("c4", "clara-d", "dag-a", "run-ended", "exited", 30.0)]
    store.manager.list_steps.return_value = steps  # type: ignore[attr-defined]
    states = {"run-ended": "failed", "run-live": "running", "run-unknown": "unknown"}
    report = admin.collect_steps(state_of=lambda d, r: states[r])
    assert report == ["removed step container clara-a (exited) of dag-a/run-ended (run failed)"]
    store.manager.remove_step.assert_called_once_with("c1")  # type: ignore[attr-defined]


def test_leases_are_per_dag_and_run() -> None:
    store = MemoryStore()
    leases.take_lease(SID, "dag-a", "scheduled__1", store)
    leases.take_lease(SID, "dag-b", "scheduled__1", store)  # the same run id in another DAG
    leases.release_lease(SID, "dag-a", "scheduled__1", store)
    (left,) = leases.leases(SID, store)
    assert not isinstance(left, BadRecord) and left.dag_id == "dag-b"


def test_the_ensure_result_is_frozen_and_its_xcom_contract_is_pinned() -> None:
    import dataclasses

    from clara_airflow.services.ensure import EnsureResult

    result = EnsureResult("id1", "host1", {"A": "host1:1"}, True, 0.123456)
    assert result.as_xcom() == {"id": "id1", "host": "host1", "connections": {"A": "host1:1"}, "created": True,
                                "seconds": 0.1235}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.id = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunRef("d", "r").dag_id = "x"  # type: ignore[misc]


def test_the_ensure_hands_on_what_is_left_of_its_start_timeout_and_times_itself() -> None:
    store = MemoryStore()
    fake = manager()
    seen: dict[str, Any] = {}

    def ensure(svc_: Any, *, timeout: float, log: Any, sole_user: Any = None) -> ServiceInstance:
        seen["timeout"] = timeout
        seen["record"] = read_record(SID, store)
        return instance()

    fake.ensure.side_effect = ensure
    result = ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={"network": "n"},
                            idle_ttl=60, start_timeout=30, log=LOG, store=store)
    assert 29 < seen["timeout"] <= 30
    provisional = seen["record"]
    assert provisional is not None and provisional.host == f"clara-svc-{SID}" and provisional.location == {"network": "n"}
    assert 0 <= result.seconds < 5 and result.created is True and result.host == f"clara-svc-{SID}"
    final = read_record(SID, store)
    assert final is not None and final.started_at == "2026-01-01T00:00:00+00:00"
    short = ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={}, idle_ttl=60,
                           start_timeout=0.1, log=LOG, store=store)
    assert seen["timeout"] == 1.0 and short.id == SID  # at least a second to look


def test_the_ensure_tells_the_manager_whether_its_run_is_the_only_user(store: MemoryStore) -> None:
    """What lets Kubernetes roll out a rotated pull secret: only when no other run holds a lease."""
    fake = store.manager  # type: ignore[attr-defined]
    answers: list[bool] = []
    fake.ensure.side_effect = lambda *a, **k: (answers.append(k["sole_user"]()), instance())[1]
    store.states[("dag-a", "run-1")] = "running"  # type: ignore[attr-defined]
    ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={}, idle_ttl=60,
                   start_timeout=5, log=LOG, store=store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    leases.take_lease(SID, "dag-b", "run-9", store)
    ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={}, idle_ttl=60,
                   start_timeout=5, log=LOG, store=store)
    store.states[("dag-b", "run-9")] = "success"  # type: ignore[attr-defined]
    ensure_service(svc(), fake, RunRef("dag-a", "run-1"), backend="docker", location={}, idle_ttl=60,
                   start_timeout=5, log=LOG, store=store)
    assert answers == [True, False, True]
