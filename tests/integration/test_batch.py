"""Batch mode against the real Docker engine, through real Airflow (dag.test()): one mapped branch per
study, the shared service ensured once per batch, the ledger's exactly-once rules and the summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.layout import run_folder
from clara_airflow.batch.run import ledger_for
from tests.conftest import HOME, OUTPUT

pytestmark = [pytest.mark.docker, pytest.mark.slow]
INBOX = HOME / "inbox"


def study(name: str, *, fail: bool = False, complete: bool = True) -> Path:
    folder = INBOX / name
    folder.mkdir(parents=True)
    (folder / "study.txt").write_text(f"study {name}\n")
    if fail:
        (folder / "FAIL").write_text("")
    if complete:
        (folder / ".complete").write_text("")
    return folder


def states(dr: Any) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]": ti.state for ti in dr.get_task_instances()}


def summary_of(dr: Any) -> dict[str, Any]:
    return json.loads((run_folder(str(OUTPUT), "it-batch", dr.run_id) / "batch-summary.json").read_text())


def service_starts(docker_cli: Any) -> int:
    return len(docker_cli.containers.list(all=True, filters={"label": "clara-airflow/service-id"},
                                          sparse=True))


def test_each_study_once_in_its_own_branch_with_one_service(dagbag: Any, docker_cli: Any) -> None:
    dag = dagbag.dags["it-batch"]
    for name in ("s1", "s2"):
        study(name)
    study("s3-bad", fail=True)
    study("s4-arriving", complete=False)
    os.utime(INBOX / "s4-arriving", None)
    (INBOX / ".hidden").mkdir()
    first = dag.test()
    assert first.state == "failed", states(first)
    found = summary_of(first)
    assert (found["succeeded"], found["failed"]) == (2, 1), found
    assert [s["study"] for s in found["studies"]] == ["s1", "s2", "s3-bad"]
    folder = run_folder(str(OUTPUT), "it-batch", first.run_id)
    assert (folder / "s1" / "write" / "result.txt").read_text() == "STUDY S1\n"
    assert (folder / "s2" / "read" / "answer").read_text().strip().endswith("batch-service-ok")
    assert not (folder / "s4-arriving").exists()
    ledger = ledger_for(str(OUTPUT), "it-batch", retries=1)
    assert {n: e.state for n, e in ledger.studies().items()} == {"s1": "done", "s2": "done", "s3-bad": "failed"}
    labels = {ti.rendered_map_index for ti in first.get_task_instances() if ti.map_index >= 0}
    assert {"s1", "s2", "s3-bad"} <= labels

    second = dag.test()
    assert [s["study"] for s in summary_of(second)["studies"]] == ["s3-bad"]
    assert ledger.current("s3-bad")[1].state == "given-up"  # type: ignore[union-attr]

    third = dag.test()
    assert third.state == "success", states(third)
    assert summary_of(third)["studies"] == []
    ensure = [ti for ti in third.get_task_instances() if ti.task_id.startswith("clara_services.")]
    assert ensure and all(ti.state == "skipped" for ti in ensure), "no studies: no service is ensured"


def test_a_service_that_will_not_start_gives_the_studies_back_untouched(dagbag: Any, docker_cli: Any) -> None:
    from clara_airflow.batch.run import study_states
    from clara_airflow.settings import BatchSettings

    inbox = HOME / "inbox-badsvc"
    for name in ("ct-1", "ct-2"):
        (inbox / name).mkdir(parents=True)
        (inbox / name / ".complete").write_text("")
    dag = dagbag.dags["it-batch-badsvc"]
    for attempt in (1, 2):  # retries: 0, yet nothing is ever given up: the studies are not at fault
        run = dag.test()
        assert run.state == "failed", states(run)
        ensure = [ti for ti in run.get_task_instances() if ti.task_id.startswith("clara_services.ensure_")]
        assert ensure and all(ti.state == "failed" for ti in ensure)
        found = json.loads((run_folder(str(OUTPUT), "it-batch-badsvc", run.run_id) / "batch-summary.json").read_text())
        assert (found["succeeded"], found["failed"], found["waiting"]) == (0, 0, 2), found
        ledger = ledger_for(str(OUTPUT), "it-batch-badsvc", retries=0)
        assert {n: (e.state, e.failures) for n, e in ledger.studies().items()} == \
            {"ct-1": ("waiting", 0), "ct-2": ("waiting", 0)}, attempt
        summary = next(ti for ti in run.get_task_instances() if ti.task_id == "batch_summary")
        assert summary.state == "failed"
    rows = study_states(BatchSettings(str(inbox)), str(OUTPUT), "it-batch-badsvc", 0)
    assert [(r["study"], r["state"]) for r in rows] == [("ct-1", "waiting"), ("ct-2", "waiting")]
