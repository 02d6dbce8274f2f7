"""The state readers inside a real task (dag.test(): the Task SDK's supervisor and in-process Execution
API), where Airflow hands back its own enums, not strings. No stub: the values are what Airflow gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def run_probe(dagbag: Any, tmp_path: Path, **conf: Any) -> tuple[Any, dict[str, Any]]:
    result = tmp_path / f"result-{len(list(tmp_path.iterdir()))}.json"
    run = dagbag.dags["clara_probe_runtime"].test(run_conf={"ledger": str(tmp_path / "ledger"),
                                                            "result": str(result), **conf})
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    return run, json.loads(result.read_text())


def test_run_states_read_inside_a_task_are_airflows_plain_values(dagbag: Any, tmp_path: Path) -> None:
    first, found = run_probe(dagbag, tmp_path)
    assert found["in_task"] is True, "the probe must run through the Task SDK, or it proves nothing"
    assert (found["own"], found["missing"]) == ("running", "gone"), found
    assert found["claimed"] is True
    assert found["overlapping_run_takes_it"] is False, "a study held by a live run went to an overlapping run"
    assert found["lease_holders"] == [first.run_id]

    _, again = run_probe(dagbag, tmp_path, ended=first.run_id)
    assert again["ended"] == "success", again
    assert again["ended_runs_claim_taken_over"] is True, "a claim of an ended run must go to the next run"
    assert again["lease_holders"] == [r for r in again["lease_holders"] if r != first.run_id], \
        "the lease of a run that ended (without its teardown) must be released"
