"""Retention's decisions and deletions (clara_airflow.batch.retention) on real folders and a real ledger:
only what ended (by the end date Airflow gives) longer ago than its retention goes, a done study leaves a
tombstone that tells the same study from a new one, and nothing is followed through a symbolic link."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.layout import RUN_MARKER
from clara_airflow.batch.inbox import fingerprint
from clara_airflow.batch.ledger import DELETED, Ledger
from clara_airflow.batch.retention import Plan, apply, plan_groups, plan_outputs, plan_studies
from clara_airflow.batch.run import select_studies
from clara_airflow.settings import BatchSettings
from tests.helpers import make_options

NOW = 1_800_000_000.0
DAY = 86400
log = logging.getLogger("test.retention")


def run_folder(root: Path, dag: str, name: str, run_id: str, size: int = 10) -> Path:
    folder = root / dag / name
    (folder / "step").mkdir(parents=True)
    (folder / RUN_MARKER).write_text(run_id)
    (folder / "step" / "out.bin").write_bytes(b"x" * size)
    return folder


def ends(table: dict[str, tuple[str, float | None]]) -> Any:
    return lambda dag, run: table.get(run, ("gone", None))


def test_only_runs_that_ended_longer_ago_than_outputs_lose_their_folder(tmp_path: Path) -> None:
    settings = make_options({"payload.output_root": str(tmp_path), "retention.outputs": 7 * DAY}).pipeline
    old = run_folder(tmp_path, "p", "old", "manual__old", 100)
    failed = run_folder(tmp_path, "p", "failed", "manual__failed")
    young = run_folder(tmp_path, "p", "young", "manual__young")
    busy = run_folder(tmp_path, "p", "busy", "manual__busy")
    lost = run_folder(tmp_path, "p", "lost", "manual__lost")
    unread = run_folder(tmp_path, "p", "unread", "manual__unread")
    noend = run_folder(tmp_path, "p", "noend", "manual__noend")
    (tmp_path / "p" / "stranger").mkdir()  # not a run folder: no marker
    (tmp_path / "p" / ".clara-studies").mkdir()  # the ledger: never looked at
    os.symlink(old, tmp_path / "p" / "link")  # a link: never followed, never listed
    plan = Plan()
    plan_outputs(plan, "p", settings, ends({
        "manual__old": ("success", NOW - 8 * DAY), "manual__failed": ("failed", NOW - 30 * DAY),
        "manual__young": ("success", NOW - 6 * DAY), "manual__busy": ("running", None),
        "manual__unread": ("unknown", None), "manual__noend": ("success", None)}), NOW)
    assert [(i.path, i.reason, i.bytes) for i in plan.delete] == [
        (str(failed), "run manual__failed failed, ended 30.0 d ago (retention 7.0 d)", 10 + len("manual__failed")),
        (str(old), "run manual__old success, ended 8.0 d ago (retention 7.0 d)", 100 + len("manual__old"))]
    assert {Path(i.path).name: i.reason for i in plan.keep} == {
        "busy": "run manual__busy is running", "lost": "Airflow no longer knows the run",
        "noend": "the run's end date cannot be read", "stranger": f"no readable {RUN_MARKER}: not a run folder",
        "unread": "run manual__unread is unknown", "young": "run manual__young success, ended 6.0 d ago (retention 7.0 d)"}
    assert apply(plan, log) == []
    assert not old.exists() and not failed.exists() and all(p.exists() for p in (young, busy, lost, unread, noend))
    assert (tmp_path / "p" / "link").is_symlink() and (tmp_path / "p" / ".clara-studies").is_dir()


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    run_folder(tmp_path, "p", "old", "manual__old")
    plan = Plan()
    plan_outputs(plan, "p", make_options({"payload.output_root": str(tmp_path)}).pipeline,
                 ends({"manual__old": ("success", 0.0)}), NOW)
    assert plan.delete == plan.keep == []


def study(inbox: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    for file, data in files.items():
        (folder / file).write_bytes(data)
    (folder / ".complete").touch()
    return folder


def test_a_done_study_leaves_a_tombstone_that_knows_the_same_study_from_a_new_one(tmp_path: Path,
                                                                                  monkeypatch: Any) -> None:
    inbox, ledger = tmp_path / "inbox", Ledger(tmp_path / "ledger")
    done = study(inbox, "s-done", {"a.dcm": b"1" * 10})
    failed = study(inbox, "s-failed", {"a.dcm": b"2"})
    young = study(inbox, "s-young", {"a.dcm": b"3"})
    outside = tmp_path / "other-patient.dcm"
    outside.write_bytes(b"keep me")
    os.symlink(outside, done / "link.dcm")  # a link inside: deleted as a link, its target untouched
    clock = [NOW - 10 * DAY]
    monkeypatch.setattr("clara_airflow.batch.ledger.time.time", lambda: clock[0])
    for name in ("s-done", "s-failed"):
        assert ledger.claim(name, "r1", lambda run: "success")
    ledger.finish("s-done", "r1", ok=True, seconds=1, output="o")
    ledger.finish("s-failed", "r1", ok=False, seconds=1, output="o")
    clock[0] = NOW - DAY
    assert ledger.claim("s-young", "r2", lambda run: "success")
    ledger.finish("s-young", "r2", ok=True, seconds=1, output="o")
    clock[0] = NOW
    printed = fingerprint(done)
    plan = Plan()
    plan_studies(plan, ledger, str(inbox), 7 * DAY, NOW)
    assert [(Path(i.path).name, i.reason) for i in plan.delete] == [("s-done", "done by run r1 10.0 d ago (retention 7.0 d)")]
    assert {Path(i.path).name: i.reason for i in plan.keep} == {
        "s-failed": "study is given-up: only done studies are deleted",
        "s-young": "done by run r2 1.0 d ago (retention 7.0 d)"}
    assert apply(plan, log) == []
    assert not done.exists() and failed.exists() and young.exists() and outside.read_bytes() == b"keep me"
    _, entry = ledger.current("s-done")
    assert entry is not None and (entry.state, entry.run_id, entry.detail) == (DELETED, "r1", printed)

    batch = BatchSettings(inbox=str(inbox), quiet_seconds=0)
    study(inbox, "s-done", {"a.dcm": b"1" * 10})  # the same regular files, names and sizes: the same study
    chosen = select_studies(batch, ledger, "r3", lambda run: "success")
    assert [s["study"] for s in chosen.studies] == []
    assert chosen.skipped["s-done"].startswith("done by run r1, deleted by retention; the same files arrived again")
    again = Plan()
    plan_studies(again, ledger, str(inbox), 7 * DAY, NOW)  # the copy sent again goes too, without a new entry
    assert [Path(i.path).name for i in again.delete] == ["s-done"] and apply(again, log) == []
    study(inbox, "s-done", {"a.dcm": b"1" * 11})  # other content under the same name: a new study
    assert [s["study"] for s in select_studies(batch, ledger, "r4", lambda run: "success").studies] == ["s-done"]


def complete_group(inbox: Path, called: str, uid: str, runs: list[tuple[str, str]]) -> Path:
    folder = inbox / called / uid
    folder.mkdir(parents=True)
    (folder / "1.dcm").write_bytes(b"d")
    (folder / ".complete").write_text("1 instances\n" + "".join(f"run {d} {r}\n" for d, r in runs))
    return folder


def test_receiver_groups_go_once_every_run_ended_and_set_aside_ones_in_time(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    old = complete_group(inbox, "CT_AI", "1.1", [("ct", "r-ct-1"), ("triage", "r-tr-1")])
    half = complete_group(inbox, "CT_AI", "1.2", [("ct", "r-ct-2"), ("triage", "r-tr-2")])
    forever = complete_group(inbox, "MR_AI", "1.3", [("mr", "r-mr-3")])
    lost = complete_group(inbox, "CT_AI", "1.6", [("ct", "r-ct-6"), ("triage", "r-gone")])
    gathering = inbox / "CT_AI" / "1.4"
    gathering.mkdir()  # no .complete: the receiver's
    unrouted = inbox / ".clara-receiver" / "unrouted" / "CT_AI" / "1.5"
    unrouted.mkdir(parents=True)
    os.utime(unrouted, (NOW - 9 * DAY, NOW - 9 * DAY))
    keeps = {"ct": 2 * DAY, "triage": 5 * DAY, "mr": None}
    plan = Plan()
    plan_groups(plan, inbox, {"CT_AI": ["ct", "triage"], "MR_AI": ["mr"]}, keeps.get, ends({
        "r-ct-1": ("success", NOW - 9 * DAY), "r-tr-1": ("failed", NOW - 6 * DAY),
        "r-ct-2": ("success", NOW - 9 * DAY), "r-tr-2": ("running", None), "r-mr-3": ("success", 0.0),
        "r-ct-6": ("success", NOW - 9 * DAY)}), NOW)
    assert [(i.path, i.reason) for i in plan.delete] == [
        (str(old), "its 2 run(s) ended 6.0 d ago (retention 5.0 d)"),
        (str(unrouted), "unrouted, set aside 9.0 d ago (retention 5.0 d)")]
    assert [(i.path, i.reason) for i in plan.keep] == [
        (str(half), "r-tr-2 is running"), (str(lost), "r-gone is gone"),
        (str(forever), "a pipeline it ran keeps studies forever")]
    assert apply(plan, log) == [] and not old.exists() and half.exists() and gathering.exists()


def test_a_folder_swapped_for_a_link_after_the_plan_is_not_deleted(tmp_path: Path) -> None:
    settings = make_options({"payload.output_root": str(tmp_path), "retention.outputs": 1}).pipeline
    folder = run_folder(tmp_path, "p", "old", "manual__old")
    plan = Plan()
    plan_outputs(plan, "p", settings, ends({"manual__old": ("success", 0.0)}), NOW)
    target = tmp_path / "precious"
    (target / "x").mkdir(parents=True)
    os.rename(folder, tmp_path / "moved")
    os.symlink(target, folder)
    assert apply(plan, log) == [f"{folder}: not a folder any more"]
    assert (target / "x").is_dir()


@pytest.mark.parametrize("text,seconds", [("30d", 30 * DAY), ("12h", 12 * 3600), ("30m", 1800), ("45s", 45)])
def test_durations(tmp_path: Path, text: str, seconds: int) -> None:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.load import load_pipeline
    from tests.helpers import write

    path = write(tmp_path, f"""\
api-version: 0.4.0
name: r
x-airflow:
  retention: {{outputs: {text}, studies: null}}
operators:
- name: a
  container: {{image: clara-airflow/busybox, tag: "1"}}
""")
    settings = compile_pipeline(load_pipeline(path)).settings
    assert (settings.retention.outputs, settings.retention.studies) == (seconds, None)
