"""A batch run's decisions without Airflow: which studies it takes (two overlapping runs never share
one), how a branch ended, the summary, the CLI's view of a pipeline's studies, and the compile rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clara_airflow.batch.run import (
    ledger_for,
    select_studies,
    study_folder,
    study_outcome,
    study_states,
    summarise,
    write_summary,
)
from clara_airflow.cli import main
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.errors import ClaraAirflowError, SpecError
from clara_airflow.settings import BatchSettings
from clara_airflow.spec.load import load_pipeline
from tests.helpers import write


def inbox_with(tmp_path: Path, *names: str, complete: bool = True) -> Path:
    inbox = tmp_path / "inbox"
    for name in names:
        (inbox / name).mkdir(parents=True)
        if complete:
            (inbox / name / ".complete").write_text("")
    inbox.mkdir(exist_ok=True)
    return inbox


def live(*runs: str):  # type: ignore[no-untyped-def]
    return lambda run_id: "running" if run_id in runs else "failed"


def test_two_overlapping_runs_never_take_the_same_study(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a", "b", "c")
    batch = BatchSettings(str(inbox), quiet_seconds=60, max_studies=2)
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    first = select_studies(batch, ledger, "nightly", live("nightly", "manual"))
    assert [s["study"] for s in first.studies] == ["a", "b"]
    assert first.skipped == {"c": "over max_studies (2): left for the next run"}
    second = select_studies(batch, ledger, "manual", live("nightly", "manual"))
    assert [s["study"] for s in second.studies] == ["c"]
    assert second.skipped == {"a": "claimed by run nightly", "b": "claimed by run nightly"}
    assert first.studies[0]["folder"] == str(inbox / "a")


def test_a_dead_runs_studies_go_to_the_next_run_and_done_ones_never(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a", "b")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    select_studies(batch, ledger, "killed", live("killed"))
    ledger.finish("a", "killed", ok=True, seconds=1, output="/o")
    again = select_studies(batch, ledger, "next", live("next"))  # "killed" is no longer running
    assert [s["study"] for s in again.studies] == ["b"] and again.skipped == {"a": "done"}


def test_a_missing_inbox_fails_and_claims_nothing(tmp_path: Path) -> None:
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    with pytest.raises(ClaraAirflowError, match="does not exist; create it"):
        select_studies(BatchSettings(str(tmp_path / "gone")), ledger, "r", live("r"))
    assert ledger.studies() == {}


def test_unsafe_and_hidden_names_are_not_studies(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "ok", ".hidden", "_partial", "x" * 201)
    warnings: list[str] = []
    chosen = select_studies(BatchSettings(str(inbox)), ledger_for(str(tmp_path / "o"), "p", 0), "r", live("r"),
                            warn=warnings.append)
    assert [s["study"] for s in chosen.studies] == ["ok"] and len(warnings) == 1 and "over 200 bytes" in warnings[0]
    with pytest.raises(ValueError, match="cannot be a folder"):
        study_folder(tmp_path, "..")
    with pytest.raises(ValueError, match="hidden"):
        study_folder(tmp_path, ".clara-studies")
    assert study_folder(tmp_path, "ok") == tmp_path / "ok"


def test_a_branch_succeeds_only_when_every_step_did() -> None:
    assert study_outcome({"study.a_0": "success", "study.b_0": "success"}, 2) == "success"
    assert study_outcome({"study.a_0": "failed", "study.b_0": "upstream_failed"}, 2) == "failed"
    assert study_outcome({"study.a_0": "success", "study.b_0": "upstream_failed"}, 2) == "not-run", \
        "an upstream outside the branch (an ensure task) failed: not the study's fault"
    assert study_outcome({"study.a_0": "success"}, 2) == "not-run", "a step that never ran is not a success"
    assert study_outcome({}, 2) == "not-run"


def test_the_outcome_reads_the_enums_a_task_is_handed() -> None:
    """Inside a task, the Task SDK hands states back as its own enums, whose str() is not the value."""
    from airflow.sdk.api.datamodels._generated import TaskInstanceState

    assert str(TaskInstanceState.SUCCESS) != "success", "if str() gave the value, this test would prove nothing"
    assert study_outcome({"a": TaskInstanceState.SUCCESS, "b": TaskInstanceState.SUCCESS}, 2) == "success"
    assert study_outcome({"a": TaskInstanceState.FAILED, "b": TaskInstanceState.UPSTREAM_FAILED}, 2) == "failed"


def test_the_summary_counts_and_lists_every_study(tmp_path: Path) -> None:
    records = [{"study": "b", "state": "failed", "seconds": 2.0, "output": "/o/b"}, None,
               {"study": "a", "state": "success", "seconds": 1.5, "output": "/o/a"}]
    summary = summarise(records, {"c": "done"})
    assert [s["study"] for s in summary["studies"]] == ["a", "b"]
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (1, 1, 1)
    path = write_summary(tmp_path / "run", summary)
    assert json.loads(path.read_text()) == summary and path.name == "batch-summary.json"


BATCH = """\
api-version: 0.4.0
name: nightly
x-airflow:
  schedule: "0 2 * * *"
  batch: {{inbox: {inbox}, quiet_seconds: 5, max_studies: 3}}
  payload: {{output_root: {out}}}
{backend}operators:
- name: a
  container: {{image: example/a, tag: "1"}}
  input: [{{path: /in}}]
  output: [{{path: /out}}]
"""


def test_batch_settings_are_read_and_a_schedule_needs_no_payload(tmp_path: Path) -> None:
    path = write(tmp_path, BATCH.format(inbox=tmp_path / "in", out=tmp_path / "out", backend=""))
    plan = compile_pipeline(load_pipeline(path))
    assert plan.settings.batch == BatchSettings(str(tmp_path / "in"), 5, 3)


@pytest.mark.parametrize(("inbox", "backend", "message"), [
    ("/data/in", "  backend: kubernetes\n  payload: {claim: data}\n", "runs on the Docker backend only"),
    ("{out}/in", "", "lies inside or contains payload.output_root"),
])
def test_batch_mode_refusals_are_positioned(tmp_path: Path, inbox: str, backend: str, message: str) -> None:
    text = BATCH.format(inbox=inbox.format(out=tmp_path / "out"), out=tmp_path / "out", backend="")
    text = text.replace("operators:", backend.replace("  payload: {claim: data}\n", "") + "operators:")
    if "kubernetes" in backend:
        text = text.replace(f"payload: {{output_root: {tmp_path / 'out'}}}", "payload: {claim: data}")
    with pytest.raises(SpecError, match=message) as err:
        compile_pipeline(load_pipeline(write(tmp_path, text)))
    assert (err.value.problems[0].line, err.value.problems[0].col) == (5, 10)


def test_bad_batch_values_are_errors(tmp_path: Path) -> None:
    text = BATCH.format(inbox="relative", out=tmp_path / "out", backend="").replace("max_studies: 3",
                                                                                   "max_studies: 0")
    with pytest.raises(SpecError) as err:
        load_pipeline(write(tmp_path, text))
    messages = " ".join(p.message for p in err.value.problems)
    assert "batch.inbox' must be an absolute path" in messages and "batch.max_studies' must be at least 1" in messages


def test_the_studies_command_lists_states_and_offers_a_study_again(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    inbox = inbox_with(tmp_path, "done-one", "failing", "new")
    (inbox / "arriving").mkdir()
    path = write(tmp_path, BATCH.format(inbox=inbox, out=tmp_path / "out", backend=""))
    ledger = ledger_for(str(tmp_path / "out"), "nightly", retries=0)
    for name in ("done-one", "failing"):
        ledger.claim(name, "r1", live())
    ledger.finish("done-one", "r1", ok=True, seconds=3, output="/out/r1/done-one")
    ledger.finish("failing", "r1", ok=False, seconds=1, output="")
    assert main(["studies", str(path), "--json"]) == 0
    rows = {r["study"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"arriving": "arriving", "done-one": "done", "failing": "given-up", "new": "waiting"}
    assert main(["studies", str(path)]) == 0
    assert "given up after 1 failed run(s)" in capsys.readouterr().out
    assert main(["studies", str(path), "--retry", "failing"]) == 0
    assert ledger.current("failing")[1].state == "offered"  # type: ignore[union-attr]
    assert main(["studies", str(path), "--retry", "new"]) == 1
    assert "only a failed, given-up or corrupt study" in capsys.readouterr().err
    states = {r["study"]: r["state"] for r in study_states(BatchSettings(str(inbox)), str(tmp_path / "out"),
                                                            "nightly", 0)}
    assert states["failing"] == "offered"


def test_a_branch_reads_its_study_from_the_inbox_and_fails_alone_when_it_vanished(tmp_path: Path) -> None:
    import shutil

    from clara_airflow.operators.step_inputs import run_inputs

    inbox = inbox_with(tmp_path, "a")
    plan = compile_pipeline(load_pipeline(write(tmp_path, BATCH.format(inbox=inbox, out=tmp_path / "out",
                                                                       backend=""))))
    context = {"params": {"clara_payload": None}, "ti": None}

    def inputs(folder: Path) -> str:
        return run_inputs(context, plan.steps[0], [], {}, payload_root="/nowhere", local=True,
                          study=(str(folder), str(inbox))).payload

    assert inputs(inbox / "a") == str(inbox / "a"), "the inbox, not payload_root, bounds a study"
    with pytest.raises(ClaraAirflowError, match="is outside the payload root"):
        inputs(tmp_path)
    shutil.rmtree(inbox / "a")
    with pytest.raises(ClaraAirflowError, match="does not exist"):
        inputs(inbox / "a")


def test_a_corrupt_ledger_entry_blocks_only_its_study_and_is_shown_with_its_path(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    inbox = inbox_with(tmp_path, "a", "b", "c")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=1)
    assert [s["study"] for s in select_studies(batch, ledger, "r1", live("r1")).studies] == ["a", "b", "c"]
    torn = ledger.root / "b" / "1.json"
    torn.write_text('{"state": "clai')  # a torn write (another tool, a disk without ordering)
    (ledger.root / "c" / "1.json").write_text('{"state": 7, "failures": "x"}')
    ledger.finish("a", "r1", ok=False, seconds=1, output="")
    second = select_studies(batch, ledger, "r2", live("r2"))
    assert [s["study"] for s in second.studies] == ["a"], "the other studies are never blocked"
    assert second.skipped["b"].startswith(f"corrupt ledger entry {torn}")
    rows = {r["study"]: r for r in study_states(batch, str(tmp_path / "out"), "p", 1)}
    assert rows["b"]["state"] == rows["c"]["state"] == "corrupt" and str(torn) in rows["b"]["detail"]
    assert ledger.offer_again("b").state == "offered", "--retry mends a corrupt study"
    assert [s["study"] for s in select_studies(batch, ledger, "r3", live("r2", "r3")).studies] == ["b"]


def test_a_ledger_that_cannot_be_written_fails_the_selection_with_the_path(tmp_path: Path) -> None:
    from tests.filesystems import read_only

    inbox = inbox_with(tmp_path, "a", "b")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    ledger.root.mkdir(parents=True)
    with read_only(ledger.root), pytest.raises(ClaraAirflowError) as raised:
        select_studies(batch, ledger, "r1", live("r1"))
    assert str(ledger.root / "a") in str(raised.value) and "Read-only file system" in str(raised.value)
    assert ledger.studies() == {}, "nothing is claimed, and no study was skipped as if another run had won"


def test_studies_claimed_before_a_ledger_error_go_back_to_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from clara_airflow.batch import ledger as ledger_module

    inbox = inbox_with(tmp_path, "a", "b")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    real = ledger_module.create_file

    def fails_for_b(path: Path, content: str, **kwargs: int) -> bool:
        if Path(path).parent.name == "b":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, content, **kwargs)

    monkeypatch.setattr(ledger_module, "create_file", fails_for_b)
    with pytest.raises(ClaraAirflowError, match="No space left on device"):
        select_studies(batch, ledger, "r1", live("r1"))
    assert ledger.current("a")[1].state == "waiting"  # type: ignore[union-attr]


def test_a_study_named_like_a_file_of_the_run_is_skipped_with_a_reason(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "batch-summary.json", "ok")
    warned: list[str] = []
    chosen = select_studies(BatchSettings(str(inbox)), ledger_for(str(tmp_path / "out"), "p", retries=0), "r1",
                            live("r1"), warn=warned.append)
    assert [s["study"] for s in chosen.studies] == ["ok"]
    assert warned and "batch-summary.json" in warned[0] and "the run writes a file of that name" in warned[0]


def test_a_run_takes_no_more_studies_than_airflow_can_map(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, *(f"s{i:02d}" for i in range(12)))
    batch = BatchSettings(str(inbox), max_studies=10_000)
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    chosen = select_studies(batch, ledger, "r1", live("r1"), limit=5)
    assert len(chosen.studies) == 5 and len(chosen.skipped) == 7
    assert "max_map_length" in chosen.skipped["s11"]
    assert sorted(ledger.studies()) == [s["study"] for s in chosen.studies], "nothing claimed beyond the map"


def test_a_claim_by_a_run_that_ended_is_shown_as_waiting(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=0)
    select_studies(batch, ledger, "killed", live("killed"))
    row, = study_states(batch, str(tmp_path / "out"), "p", 0, run_state=live())
    assert row["state"] == "waiting" and "ended (failed)" in row["detail"]
    row, = study_states(batch, str(tmp_path / "out"), "p", 0, run_state=live("killed"))
    assert row["state"] == "claimed"


def test_a_released_study_keeps_its_attempts_and_goes_to_the_next_run(tmp_path: Path) -> None:
    inbox = inbox_with(tmp_path, "a")
    batch = BatchSettings(str(inbox))
    ledger = ledger_for(str(tmp_path / "out"), "p", retries=1)
    select_studies(batch, ledger, "r1", live("r1"))
    ledger.finish("a", "r1", ok=False, seconds=1, output="")
    select_studies(batch, ledger, "r2", live("r2"))
    released = ledger.release("a", "r2", "the service could not be ensured")
    assert released is not None and (released.state, released.failures) == ("waiting", 1)
    assert ledger.release("a", "r2", "again") is None, "only the run that holds it gives it back"
    row, = study_states(batch, str(tmp_path / "out"), "p", 1)
    assert row["state"] == "waiting" and "the service could not be ensured" in row["detail"]
    assert [s["study"] for s in select_studies(batch, ledger, "r3", live("r3")).studies] == ["a"]
    assert ledger.finish("a", "r3", ok=False, seconds=1, output="").state == "given-up"  # type: ignore[union-attr]
