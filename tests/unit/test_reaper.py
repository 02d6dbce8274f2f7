"""The clara_service_reaper DAG as Airflow gets it, and what its one task does and logs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from clara_airflow.services import reaper
from clara_airflow.settings import Deployment


def test_the_reaper_runs_on_the_configured_schedule_one_run_at_a_time_and_unpaused() -> None:
    dag = reaper.build_reaper_dag(dataclasses.replace(Deployment(), reaper_schedule="17 * * * *"))
    assert dag.dag_id == reaper.REAPER_DAG_ID == "clara_service_reaper"
    assert dag.schedule == "17 * * * *"
    assert dag.start_date == datetime(2024, 1, 1, tzinfo=UTC) and dag.catchup is False
    assert dag.max_active_runs == 1 and dag.is_paused_upon_creation is False
    assert sorted(dag.tags) == ["clara", "maintenance"]
    assert dag.description == "Stops Clara services idle past their TTL and reports orphaned service instances."
    assert dag.doc_md == ("Stops every shared Clara service whose `last_used` is older than its idle TTL "
                          "(`services.idle_ttl`) and that no running DAG run holds a lease on. Services without a "
                          "Variable record are reported, and removed when `[clara] remove_orphans = True`. "
                          "`clara_cleanup` applies `x-airflow.retention`: run outputs and processed studies older "
                          "than it are deleted (`clara-airflow cleanup --dry-run` shows what would go).")
    task, cleanup = dag.tasks
    assert task.task_id == "reap" and task.python_callable is reaper.reap
    assert cleanup.task_id == "clara_cleanup" and cleanup.python_callable is reaper.clara_cleanup
    assert not task.downstream_task_ids and not cleanup.downstream_task_ids  # one failing never stops the other


def test_reap_logs_each_line_of_the_collection_and_returns_them(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["stopped clara-svc-aaaaaaaaaaaa (idle 3700 s, ttl 3600 s)", "orphan: clara-svc-bbbbbbbbbbbb"]
    monkeypatch.setattr("clara_airflow.services.admin.collect_services", lambda: lines)
    assert reaper.reap(ti=object(), run_id="scheduled__x") == lines
    assert capsys.readouterr().out.splitlines() == lines
