"""admin.py rule by rule: rows, messages of list/stop/gc, boundaries of the idle TTL, orphan age and
step grace, and what a failing backend or dry run does."""

from __future__ import annotations

from typing import Any

import pytest

from clara_airflow.backends.base import Managed, StepContainer
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services import admin, leases
from tests.helpers import make_options
from tests.lifecycle import SID, record_old
from tests.memory import MemoryStore

ROWS = [{"id": "aaaaaaaaaaaa", "names": ["x", "y"]}, {"id": "bbbbbbbbbbbb", "names": ["y"]}]


def test_resolve_messages() -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        admin.resolve("nope", ROWS)
    assert str(caught.value) == "no service 'nope'; 'clara-airflow services list' shows the ids"
    with pytest.raises(ClaraAirflowError) as caught:
        admin.resolve("y", ROWS)
    assert str(caught.value) == "'y' names several services (aaaaaaaaaaaa, bbbbbbbbbbbb); give the id"


def test_rows_with_leases_and_states(store: MemoryStore) -> None:
    record_old(store)
    leases.take_lease(SID, "dag-b", "run-9", store)
    store.states[("dag-b", "run-9")] = "running"  # type: ignore[attr-defined]
    store.manager.list_managed.return_value = {"cccccccccccc": Managed("exited", 5.0)}  # type: ignore[attr-defined]
    rows = admin.service_rows(store)
    assert rows[0]["state"] == "running" and rows[0]["leases"] == [{"dag_id": "dag-b", "run_id": "run-9",
                                                                    "state": "running"}]
    assert rows[1] == {"id": "cccccccccccc", "backend": "docker", "state": "exited (orphan: no record)", "age": 5.0,
                       "image": "?", "tag": "?", "names": [], "orphan": True, "leases": []}


def test_states_when_the_backend_fails_or_is_missing(store: MemoryStore, monkeypatch: Any) -> None:
    record_old(store)
    store.manager.status.side_effect = ConnectionError("down")  # type: ignore[attr-defined]
    assert admin.list_services(store)[0]["state"] == "unknown (ConnectionError)"
    monkeypatch.setattr(admin, "manager_for", lambda row: None)
    assert admin.list_services(store)[0]["state"] == "unknown (backend not installed)"


def test_a_bad_record_marks_the_state(store: MemoryStore) -> None:
    store.set(f"clara_service_{SID}", "[]")
    assert admin.list_services(store)[0]["state"] == "running (bad record)"


def test_a_failing_orphan_listing_does_not_hide_the_recorded_services(store: MemoryStore) -> None:
    record_old(store)
    store.manager.list_managed.side_effect = ConnectionError("down")  # type: ignore[attr-defined]
    assert [r["id"] for r in admin.list_services(store)] == [SID]


def test_stop_messages(store: MemoryStore) -> None:
    record_old(store)
    store.manager.remove_volumes.return_value = ["v1", "v2"]  # type: ignore[attr-defined]
    assert admin.stop_service(SID, volumes=True, store=store) == (
        f"stopped clara-svc-{SID}; record cleared; removed volume(s) v1, v2")
    record_old(store)
    store.manager.stop.return_value = False  # type: ignore[attr-defined]
    store.manager.remove_volumes.return_value = []  # type: ignore[attr-defined]
    assert admin.stop_service(SID, volumes=True, store=store) == (
        f"clara-svc-{SID} was not running; record cleared; no volumes removed")
    record_old(store)
    assert admin.stop_service(SID, store=store) == f"clara-svc-{SID} was not running; record cleared"
    assert store.manager.remove_volumes.call_count == 2  # type: ignore[attr-defined]  # only with volumes=True


def test_a_held_service_message(store: MemoryStore) -> None:
    record_old(store)
    for run in ("r1", "r2"):
        leases.take_lease(SID, "d", run, store)
        store.states[("d", run)] = "queued"  # type: ignore[attr-defined]
    with pytest.raises(ClaraAirflowError) as caught:
        admin.stop_service(SID, store=store)
    text = str(caught.value)
    assert text.startswith(f"service clara-svc-{SID} is in use by DAG runs: d/r") and text.endswith(
        " (queued); wait for them or pass --force")
    assert "d/r1 (queued)" in text and "d/r2 (queued)" in text and ", d/r" in text


def test_a_service_used_again_during_the_stop_is_kept(store: MemoryStore) -> None:
    record_old(store)
    row = admin.list_services(store)[0]
    assert admin.stop_guarded(row, force=False, by="x", store=store, still_wanted=lambda: False) == (
        f"keeping clara-svc-{SID}: used again while it was being stopped")
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("idle_ttl", "verdict"), [(100, "would stop"), (10**9, "keeping")])
def test_a_dry_run_says_what_it_would_do(store: MemoryStore, idle_ttl: int, verdict: str) -> None:
    record_old(store, ttl=idle_ttl)
    (line,) = admin.collect_services(dry_run=True, store=store)
    assert line.startswith(f"{verdict} clara-svc-{SID}: idle ")
    if verdict == "would stop":
        assert line.endswith(f" s >= ttl {idle_ttl} s")
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]


def test_idle_exactly_at_the_ttl_is_stopped_and_the_last_use_wins_over_the_start() -> None:
    from datetime import UTC, datetime

    now = datetime(2020, 1, 1, 0, 1, tzinfo=UTC)
    row = {"last_used": "2020-01-01T00:00:00+00:00", "started_at": "2019-01-01T00:00:00+00:00"}
    assert admin.idle_seconds(row, now) == 60
    assert admin.idle_seconds({"started_at": "2020-01-01T00:00:30+00:00"}, now) == 30


def test_nothing_recorded(store: MemoryStore) -> None:
    assert admin.collect_services(store=store) == ["no services recorded"]


def test_the_reaper_names_the_bad_records(store: MemoryStore) -> None:
    store.set(f"clara_service_{SID}", "[]")
    store.set(f"clara_use_{SID}_0000000000000000", "{}")
    (line,) = admin.collect_services(store=store)
    assert f"bad record (clara_service_{SID}: not a JSON object but list; clara_use_{SID}_0000000000000000: missing" in line


@pytest.mark.parametrize(("age", "kept"), [(300.0, True), (300.5, False)])
def test_the_orphan_age_boundary_and_message(store: MemoryStore, age: float, kept: bool) -> None:
    store.manager.list_managed.return_value = {SID: Managed("running", age)}  # type: ignore[attr-defined]
    (line,) = admin.collect_services(remove_orphans=True, store=store)
    if kept:
        assert line == f"keeping clara-svc-{SID} (running (orphan: no record)): it may still be starting (age 300 s)"
    else:
        assert line == f"removed orphan clara-svc-{SID} (running (orphan: no record)); no Variable recorded it"


def test_an_orphan_taken_during_the_stop_is_kept(store: MemoryStore, monkeypatch: Any) -> None:
    store.manager.list_managed.return_value = {SID: Managed("running", 9999.0)}  # type: ignore[attr-defined]
    original = admin.stop_guarded

    def racing(row: dict[str, Any], **kw: Any) -> str:
        assert kw["force"] is False and kw["by"] == "clara_service_reaper (orphan)"
        leases.take_lease(SID, "d", "r", store)
        store.states[("d", "r")] = "running"  # type: ignore[attr-defined]
        return original(row, **kw)

    monkeypatch.setattr(admin, "stop_guarded", racing)
    assert admin.collect_services(remove_orphans=True, store=store) == [
        f"keeping orphan clara-svc-{SID}: a run took it while the reaper looked"]


def test_step_collection_boundaries_and_failures(store: MemoryStore) -> None:
    steps = [StepContainer("c1", "n1", "d", "r1", "exited", 599.5), StepContainer("c2", "n2", "d", "r2", "exited", 600.0),
             StepContainer("c3", "n3", "d", "r3", "exited", 700.0), StepContainer("c4", "n4", "d", "r4", "exited", 700.0)]
    store.manager.list_steps.return_value = steps  # type: ignore[attr-defined]
    states = {"r1": "failed", "r2": "success", "r3": "running", "r4": "gone"}
    assert admin.STEP_GRACE == 600.0
    assert admin.collect_steps(dry_run=True, state_of=lambda d, r: states[r]) == [
        "would remove step container n2 (exited) of d/r2 (run success)",
        "would remove step container n4 (exited) of d/r4 (run gone)"]
    store.manager.remove_step.assert_not_called()  # type: ignore[attr-defined]
    store.manager.list_steps.side_effect = ConnectionError("down")  # type: ignore[attr-defined]
    assert admin.collect_steps(state_of=lambda d, r: "failed") == [
        "cannot list step containers on docker: ConnectionError: down"]


def test_managers_cover_the_configured_and_the_recorded_backends(monkeypatch: Any) -> None:
    made: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            made.append(name)

        def service_manager(self) -> str:
            return "m"

    monkeypatch.setattr(admin, "_options", lambda: make_options({"backend": "docker"}))
    monkeypatch.setattr(admin, "get_backend", lambda name, options: Fake(name))
    assert admin.managers({"kubernetes"}) == {"docker": "m", "kubernetes": "m"}
    assert admin.managers() == {"docker": "m"}
    monkeypatch.setattr(admin, "get_backend", lambda name, options: (_ for _ in ()).throw(ImportError(name)))
    assert admin.managers({"kubernetes"}) == {}


def test_a_recorded_location_reaches_the_manager(monkeypatch: Any) -> None:
    seen: dict[str, Any] = {}

    class Fake:
        def service_manager(self) -> str:
            return "m"

    def get_backend(name: str, options: Any) -> Fake:
        seen.update(name=name, network=options.deployment.network)
        return Fake()

    monkeypatch.setattr(admin, "_options", lambda: make_options({"backend": "docker", "network": "default-net"}))
    monkeypatch.setattr(admin, "get_backend", get_backend)
    assert admin.manager_for({"backend": "kubernetes", "location": {"network": "n2"}}) == "m"
    assert seen == {"name": "kubernetes", "network": "n2"}
    admin.manager_for({})
    assert seen == {"name": "docker", "network": "default-net"}


def test_an_unrecorded_instance_is_foreign_when_another_deployment_labelled_it(store: MemoryStore,
                                                                               monkeypatch: Any) -> None:
    monkeypatch.setattr(admin, "_options", lambda: make_options({"backend": "docker", "deployment_id": "ward-a"}))
    asked: list[Any] = []
    monkeypatch.setattr(admin, "managers", lambda backends=None: asked.append(backends) or {"docker": store.manager})
    record_old(store)
    store.manager.list_managed.return_value = {  # type: ignore[attr-defined]
        SID: Managed("running", 1.0, "ward-a"),  # the recorded one: listed once, from its record
        "cccccccccccc": Managed("running", 5.0, "ward-b"),
        "dddddddddddd": Managed("exited", 7.0, "ward-a"),
        "eeeeeeeeeeee": Managed("exited", 9.0, ""),  # made before deployment identities: ours
    }
    rows = admin.list_services(store)
    assert asked == [{"docker"}] and [r["id"] for r in rows] == [SID, "cccccccccccc", "dddddddddddd", "eeeeeeeeeeee"]
    assert rows[1] == {"id": "cccccccccccc", "backend": "docker", "age": 5.0, "image": "?", "tag": "?", "names": [],
                       "state": "running (foreign: deployment ward-b)", "foreign": "ward-b"}
    assert [(r["state"], r.get("orphan")) for r in rows[2:]] == [("exited (orphan: no record)", True),
                                                                 ("exited (orphan: no record)", True)]


def test_another_deployment_s_service_and_steps_are_named_and_left_alone(store: MemoryStore,
                                                                        monkeypatch: Any) -> None:
    monkeypatch.setattr(admin, "_options", lambda: make_options({"backend": "docker", "deployment_id": "ward-a"}))
    store.manager.list_managed.return_value = {"cccccccccccc": Managed("exited", 1e9, "ward-b")}  # type: ignore[attr-defined]
    store.manager.list_steps.return_value = [  # type: ignore[attr-defined]
        StepContainer("c1", "clara-step-1", "d", "r1", "exited", 1e9, "ward-b"),
        StepContainer("c2", "clara-step-2", "d", "r2", "exited", 1e9, "ward-a")]
    with pytest.raises(ClaraAirflowError) as refused:
        admin.stop_service("cccccccccccc", force=True, store=store)
    assert str(refused.value) == (
        "clara-svc-cccccccccccc belongs to another clara-airflow deployment ('ward-b'); stop it from that deployment "
        "(this one never touches it); if that deployment no longer exists, remove its leftover yourself (docker rm -f "
        "clara-svc-cccccccccccc, or kubectl delete deployment,service clara-svc-cccccccccccc)")
    report = admin.collect_services(store=store, remove_orphans=True, ttl_override=0)
    assert "leaving clara-svc-cccccccccccc alone: it belongs to deployment 'ward-b'" in report
    # the pass also collects steps, judged by the real run_state: with a metadata database, r2 is gone
    assert ("c1",) not in [c.args for c in store.manager.remove_step.call_args_list]  # type: ignore[attr-defined]
    store.manager.remove_step.reset_mock()  # type: ignore[attr-defined]
    assert admin.collect_steps(dry_run=True, grace=0, state_of=lambda d, r: "failed") == [
        "leaving step container clara-step-1 alone: it belongs to deployment 'ward-b'",
        "would remove step container clara-step-2 (exited) of d/r2 (run failed)"]
    assert admin.collect_steps(grace=0, state_of=lambda d, r: "failed") == [
        "removed step container clara-step-2 (exited) of d/r2 (run failed)"]
    store.manager.remove_step.assert_called_once_with("c2")  # type: ignore[attr-defined]
    store.manager.stop.assert_not_called()  # type: ignore[attr-defined]


def test_the_admin_reads_the_deployment_s_own_options(monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW__CLARA__DEPLOYMENT_ID", "ward-z")
    monkeypatch.setenv("AIRFLOW__CLARA__NETWORK", "net-z")
    options = admin._options()
    assert (options.deployment.deployment_id, options.deployment.network) == ("ward-z", "net-z")


def test_the_reaper_stops_at_exactly_the_ttl_and_the_stop_intent_names_who_stopped(store: MemoryStore,
                                                                                    monkeypatch: Any) -> None:
    stoppers: list[str] = []
    real = admin.mark_stopping
    monkeypatch.setattr(admin, "mark_stopping", lambda sid, by, store: (stoppers.append(by), real(sid, by, store)))
    monkeypatch.setattr(admin, "idle_seconds", lambda row, now=None: 3600.0)
    record_old(store, ttl=3600)
    assert admin.collect_services(store=store)[0] == (
        f"stopped clara-svc-{SID}; record cleared (idle 3600 s >= ttl 3600 s)")
    record_old(store, ttl=3600)
    assert admin.stop_service(SID, store=store) == f"stopped clara-svc-{SID}; record cleared"
    assert stoppers == ["clara_service_reaper", "clara-airflow services stop"]


def test_a_record_without_a_ttl_is_kept_for_an_hour(store: MemoryStore, monkeypatch: Any) -> None:
    monkeypatch.setattr(admin, "idle_seconds", lambda row, now=None: 3599.0)
    row = {"id": SID, "backend": "docker"}
    assert admin._collect_one(row, dry_run=True, remove_orphans=False, ttl_override=None, start_timeout=300,
                              store=store) == f"keeping clara-svc-{SID}: idle 3599 s < ttl 3600 s"


def test_stopping_an_orphan_clears_no_record_and_says_none_was_cleared(store: MemoryStore, monkeypatch: Any) -> None:
    cleared: list[str] = []
    monkeypatch.setattr(admin, "clear_record", lambda sid, store: cleared.append(sid))
    store.manager.list_managed.return_value = {"cccccccccccc": Managed("exited", 5.0)}  # type: ignore[attr-defined]
    assert admin.stop_service("cccccccccccc", store=store) == "stopped clara-svc-cccccccccccc"
    assert cleared == []
