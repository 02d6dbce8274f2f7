"""A batch run's decisions rule by rule: where the ledger lives, why each study was left alone (in the
words the summary and `clara-airflow studies` show), the counts of the summary, the branch label, and
each state a study can be listed in. test_batch_run.py covers the same functions end to end."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clara_airflow.batch import run
from clara_airflow.batch.ledger import Ledger
from clara_airflow.batch.run import (
    Selection,
    branch_study,
    ledger_for,
    select_studies,
    study_folder,
    study_states,
    summarise,
    write_summary,
)
from clara_airflow.settings import BatchSettings


def ended(run_id: str) -> str:
    return "failed"


def live(run_id: str) -> str:
    return "running"


def inbox_with(root: Path, *names: str) -> Path:
    inbox = root / "inbox"
    for name in names:
        (inbox / name).mkdir(parents=True)
        (inbox / name / ".complete").write_text("")
    return inbox


def test_the_ledger_lives_beside_the_pipeline_s_runs_and_allows_retries_plus_one_runs(tmp_path: Path) -> None:
    ledger = ledger_for(str(tmp_path), "ct-nightly", 2)
    assert ledger.root == tmp_path / "ct-nightly" / ".clara-studies" and ledger.max_attempts == 3


def test_a_selection_is_a_value_and_takes_nothing_else_by_default() -> None:
    selection = Selection([])
    assert (selection.skipped, selection.waiting) == ({}, [])
    assert Selection([]).skipped is not selection.skipped  # never one shared dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        selection.studies = []  # type: ignore[misc]


def test_selecting_without_an_inbox_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as refused:
        select_studies(BatchSettings(None), Ledger("/nonexistent"), "r", live)
    assert str(refused.value) == "select_studies needs a batch inbox"


def test_each_study_left_alone_says_why(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a-done", "b-held", "c-corrupt", "d-new", "e-new", "f-new")
    ledger = Ledger(tmp_path / "ledger")
    ledger.claim("a-done", "run-0", ended)
    ledger.finish("a-done", "run-0", ok=True, seconds=1, output="/out")
    ledger.claim("b-held", "run-0", ended)
    (tmp_path / "ledger" / "c-corrupt").mkdir()
    (tmp_path / "ledger" / "c-corrupt" / "1.json").write_text("{")
    selection = select_studies(BatchSettings(str(inbox), max_studies=2), ledger, "run-1", live)
    assert selection.studies == [{"study": "d-new", "folder": str(inbox / "d-new")},
                                 {"study": "e-new", "folder": str(inbox / "e-new")}]
    corrupt = tmp_path / "ledger" / "c-corrupt" / "1.json"
    assert selection.skipped == {
        "a-done": "done", "b-held": "claimed by run run-0",
        "c-corrupt": f"corrupt ledger entry {corrupt} (JSONDecodeError: Expecting property name enclosed in double "
                     "quotes: line 1 column 2 (char 1))",
        "f-new": "over max_studies (2): left for the next run"}


@pytest.mark.parametrize(("limit", "taken", "why"), [
    (0, [], "over the 0 branches Airflow maps per run ([core] max_map_length): left for the next run"),
    (1, ["a"], "over the 1 branches Airflow maps per run ([core] max_map_length): left for the next run"),
    (-5, [], "over the 0 branches Airflow maps per run ([core] max_map_length): left for the next run"),
    (9, ["a", "b"], "over max_studies (2): left for the next run"),
])
def test_airflow_s_map_limit_bounds_a_run_below_max_studies(tmp_path: Path, limit: int, taken: list[str],
                                                           why: str) -> None:
    inbox = inbox_with(tmp_path, "a", "b", "c")
    selection = select_studies(BatchSettings(str(inbox), max_studies=2), Ledger(tmp_path / "l"), "r", live,
                               limit=limit)
    assert [s["study"] for s in selection.studies] == taken
    assert selection.skipped["c"] == why


def test_a_study_the_ledger_refuses_without_an_entry_is_skipped_as_unknown(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a")
    ledger = SimpleNamespace(claim=lambda *a, **k: False, current=lambda study: (0, None))
    assert select_studies(BatchSettings(str(inbox)), ledger, "r", live).skipped == {"a": "unknown"}  # type: ignore[arg-type]


def test_claims_made_before_an_error_go_back_with_the_reason(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a", "b")
    ledger = Ledger(tmp_path / "l")
    real = ledger.claim

    def claim(study: str, run_id: str, run_state: Any, fingerprint: Any = None) -> bool:
        if study == "b":
            raise OSError("disk gone")
        return real(study, run_id, run_state)

    ledger.claim = claim  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk gone"):
        select_studies(BatchSettings(str(inbox)), ledger, "r", live)
    _, entry = ledger.current("a")
    assert entry is not None and (entry.state, entry.detail) == ("waiting",
                                                                 "its run could not finish choosing its studies")


def test_the_summary_counts_each_state_once() -> None:
    records = [{"study": "d", "state": "waiting"}, None, {"study": "a", "state": "success"},
               {"study": "c", "state": "failed"}, {"study": "b", "state": "given-up"},
               {"study": "e", "state": "success"}, {"study": "f", "state": "waiting"}]
    summary = summarise(records, {"z": "done", "y": "claimed by run r"})
    assert summary == {"studies": sorted((r for r in records if r), key=lambda r: r["study"]),
                       "succeeded": 2, "failed": 2, "waiting": 2, "skipped": 2,
                       "skipped_studies": {"y": "claimed by run r", "z": "done"}}
    assert list(summary["skipped_studies"]) == ["y", "z"]


def test_the_summary_file_is_sorted_indented_json_in_a_folder_made_on_demand(tmp_path: Path) -> None:
    summary = {"studies": [], "b": 1, "a": 2}
    path = write_summary(tmp_path / "ct" / "run-1", summary)
    assert path == tmp_path / "ct" / "run-1" / "batch-summary.json"
    assert path.read_text() == json.dumps(summary, indent=2, sort_keys=True)
    assert write_summary(tmp_path / "ct" / "run-1", {"a": 3}).read_text() == '{\n  "a": 3\n}'  # written again


@pytest.mark.parametrize(("value", "label"), [
    ({"study": "ct-1", "folder": "/inbox/series-7"}, "ct-1"),
    ({"study": "", "folder": "/inbox/ct-2"}, "ct-2"),
    ({"folder": "/inbox/ct-3/"}, "payload"),  # a folder name that ends in a slash has no basename
    ({"other": 1}, "payload"),
])
def test_a_branch_is_labelled_by_its_study_then_its_folder(value: dict[str, Any], label: str) -> None:
    context: dict[str, Any] = {}
    assert branch_study(value, context) == value
    assert context == {"clara_study": label}


def test_a_branch_argument_airflow_has_not_resolved_yet_is_resolved_with_the_context() -> None:
    context: dict[str, Any] = {"ti": "x"}

    class Lazy:
        def resolve(self, ctx: Any) -> Any:
            assert ctx is context
            return {"study": "ct-9", "folder": "/inbox/ct-9"}

    assert branch_study(Lazy(), context) == {"study": "ct-9", "folder": "/inbox/ct-9"}
    assert context["clara_study"] == "ct-9"
    outside: dict[str, Any] = {}
    assert branch_study(None, outside) == {} and outside == {}
    assert branch_study(["not", "a", "dict"], outside) == {} and outside == {}


def test_every_state_a_study_is_listed_in_says_what_happens_next(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "arriving").mkdir(parents=True)
    (inbox / "ready").mkdir()
    (inbox / "ready" / ".complete").write_text("")
    ledger = ledger_for(str(tmp_path / "out"), "ct", 1)
    ledger.claim("claimed", "run-a", ended)
    ledger.claim("dead", "run-dead", ended)
    for name, ok in (("done", True), ("failed", False), ("given-up", False), ("offered", False)):
        ledger.claim(name, "run-b", ended)
        ledger.finish(name, "run-b", ok=ok, seconds=12.34, output=f"/out/{name}")
    ledger.claim("given-up", "run-c", ended)
    ledger.finish("given-up", "run-c", ok=False, seconds=1, output="")
    ledger.claim("offered", "run-c", ended)
    ledger.finish("offered", "run-c", ok=False, seconds=1, output="")
    ledger.offer_again("offered")
    ledger.claim("waiting", "run-d", ended)
    ledger.release("waiting", "run-d", "its services could not start")
    (ledger.root / "corrupt").mkdir()
    (ledger.root / "corrupt" / "1.json").write_text("{")

    def run_state(run_id: str) -> str:
        return "success" if run_id == "run-dead" else "running"

    rows = {r["study"]: r for r in study_states(BatchSettings(str(inbox), quiet_seconds=3600), str(tmp_path / "out"),
                                                "ct", 1, run_state)}
    details = {name: (r["state"], r["detail"]) for name, r in rows.items()}
    corrupt = ledger.root / "corrupt" / "1.json"
    assert details == {
        "arriving": ("arriving", "incomplete: no .complete file and changed in the last 3600 s"),
        "ready": ("waiting", "complete; the next run takes it"),
        "claimed": ("claimed", "claimed by run run-a"),
        "dead": ("waiting", "claimed by run run-dead, which ended (success) before it recorded the study; the next "
                            "run takes it"),
        "done": ("done", "done in run run-b (12.3 s) -> /out/done"),
        "failed": ("failed", "failed 1 time(s), last in run run-b; the next run tries again"),
        "given-up": ("given-up", "given up after 2 failed run(s), last run-c; clara-airflow studies PIPELINE --retry "
                                 "STUDY offers it again"),
        "offered": ("offered", "offered again; the next run takes it"),
        "waiting": ("waiting", "given back by run run-d (its services could not start); the next run takes it"),
        "corrupt": ("corrupt", f"its ledger entry {corrupt} cannot be read (JSONDecodeError: Expecting property "
                               "name enclosed in double quotes: line 1 column 2 (char 1)); look at it, then "
                               "clara-airflow studies PIPELINE --retry STUDY offers the study again"),
    }
    assert list(rows) == sorted(rows)
    assert {k: rows["done"][k] for k in ("run_id", "failures", "seconds", "output")} == {
        "run_id": "run-b", "failures": 0, "seconds": 12.34, "output": "/out/done"}
    assert rows["ready"].keys() == {"study", "state", "detail"}
    without = {r["study"]: r["state"] for r in study_states(BatchSettings(None), str(tmp_path / "out"), "ct", 1)}
    assert without["dead"] == "claimed" and "ready" not in without  # no run states known, no inbox


@pytest.mark.parametrize(("study", "why"), [
    ("_incoming", "it is hidden"), (".git", "it is hidden"), ("..", "it is not a single folder name"),
    ("batch-summary.json", "the run writes a file of that name beside its studies' folders"),
])
def test_a_study_folder_is_one_visible_safe_name_inside_the_run(tmp_path: Path, study: str, why: str) -> None:
    assert study_folder(tmp_path, "ct-1") == tmp_path / "ct-1"
    with pytest.raises(ValueError) as refused:
        study_folder(tmp_path, study)
    assert str(refused.value) == f"study name {study!r} cannot be a folder: {why}"


def test_run_constants_the_docs_quote() -> None:
    assert run.LEDGER_FOLDER == ".clara-studies" and os.sep not in run.LEDGER_FOLDER
