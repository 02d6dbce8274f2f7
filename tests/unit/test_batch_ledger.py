"""Batch mode without Airflow: which inbox folders are complete studies, and the ledger that gives each
study to exactly one successful run (claims, failures and re-offers, dead runs, races between processes)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from clara_airflow.batch.inbox import Study, safe_study_name, scan_inbox
from clara_airflow.batch.ledger import Ledger
from clara_airflow.errors import ClaraAirflowError


def study(inbox: Path, name: str, *, age: float = 0.0, complete: bool = False) -> Path:
    folder = inbox / name
    (folder / "series").mkdir(parents=True)
    (folder / "series" / "1.dcm").write_bytes(b"DICM")
    if complete:
        (folder / ".complete").write_text("")
    moment = time.time() - age
    for path in [folder, folder / "series", folder / "series" / "1.dcm"]:
        os.utime(path, (moment, moment))
    return folder


def test_complete_studies_by_marker_or_quiet_time(tmp_path: Path) -> None:
    study(tmp_path, "s3-quiet", age=120)
    study(tmp_path, "s1-marked", complete=True)
    study(tmp_path, "s2-fresh", age=5)
    study(tmp_path, ".hidden", age=500)
    study(tmp_path, "_tmp", age=500)
    (tmp_path / "a-file").write_text("not a study")
    found, waiting = scan_inbox(str(tmp_path), 60)
    assert found == [Study("s1-marked", str(tmp_path / "s1-marked")), Study("s3-quiet", str(tmp_path / "s3-quiet"))]
    assert waiting == ["s2-fresh"]


def test_quiet_time_counts_the_newest_file_below(tmp_path: Path) -> None:
    folder = study(tmp_path, "s", age=300)
    (folder / "series" / "2.dcm").write_bytes(b"new")  # just arrived, deep inside
    assert scan_inbox(str(tmp_path), 60) == ([], ["s"])
    assert scan_inbox(str(tmp_path), 60, now=time.time() + 61)[0] == [Study("s", str(folder))]


@pytest.mark.parametrize(("name", "bad"), [("ok-1.2_x", False), ("a\nb", True), ("x" * 201, True), ("é" * 100, False),
                                           ("é" * 101, True), ("..", True), ("a\x7fb", True)])
def test_unsafe_study_names(name: str, bad: bool) -> None:
    assert (safe_study_name(name) is not None) is bad


def test_unsafe_names_are_skipped_with_a_warning(tmp_path: Path) -> None:
    study(tmp_path, "bad\tname", complete=True)
    study(tmp_path, "good", complete=True)
    warnings: list[str] = []
    found, _ = scan_inbox(str(tmp_path), 60, warn=warnings.append)
    assert [s.name for s in found] == ["good"]
    assert warnings == [f"skipping study folder 'bad\\tname' in {tmp_path}: it holds a control character; rename it"]


def test_a_missing_or_unreadable_inbox_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ClaraAirflowError, match=f"the batch inbox {tmp_path}/none does not exist; create it"):
        scan_inbox(str(tmp_path / "none"), 60)
    (tmp_path / "file").write_text("")
    with pytest.raises(ClaraAirflowError, match="cannot be read"):
        scan_inbox(str(tmp_path / "file"), 60)


def alive(*runs: str):  # type: ignore[no-untyped-def]
    return lambda run_id: "running" if run_id in runs else "success"


def test_a_study_is_done_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, max_attempts=2)
    assert ledger.claim("s1", "run-1", alive("run-1"))
    assert ledger.claim("s1", "run-1", alive("run-1")), "the same run may ask again (its select task retried)"
    assert not ledger.claim("s1", "run-2", alive("run-1", "run-2")), "a live run holds it"
    entry = ledger.finish("s1", "run-1", ok=True, seconds=1.23456, output="/out/s1")
    assert entry is not None and (entry.state, entry.seconds, entry.output) == ("done", 1.235, "/out/s1")
    assert not ledger.claim("s1", "run-3", alive("run-3"))
    assert ledger.finish("s1", "run-2", ok=True, seconds=1, output="") is None, "only the holder may finish"


def test_a_failed_study_is_offered_again_then_given_up(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, max_attempts=2)
    assert ledger.claim("s", "run-1", alive("run-1"))
    assert ledger.finish("s", "run-1", ok=False, seconds=1, output="").state == "failed"  # type: ignore[union-attr]
    assert ledger.claim("s", "run-2", alive("run-2"))
    assert ledger.finish("s", "run-2", ok=False, seconds=1, output="").state == "given-up"  # type: ignore[union-attr]
    assert not ledger.claim("s", "run-3", alive("run-3"))
    assert ledger.offer_again("s").state == "offered"
    assert ledger.claim("s", "run-4", alive("run-4"))
    assert ledger.current("s")[1].failures == 0, "offered again with a fresh count"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="only a failed, given-up or corrupt study can be offered again"):
        ledger.offer_again("s")


def test_a_claim_of_a_dead_run_is_taken_over_but_not_of_an_unknown_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.claim("s", "run-1", alive("run-1"))
    assert not ledger.claim("s", "run-2", lambda run_id: "unknown"), "a state that cannot be read keeps the claim"
    assert not ledger.claim("s", "run-2", lambda run_id: "queued")
    assert ledger.claim("s", "run-2", lambda run_id: "gone")
    assert ledger.current("s")[1].run_id == "run-2"  # type: ignore[union-attr]


def test_the_ledger_lists_every_study_and_refuses_unsafe_names(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.claim("b", "r", alive("r"))
    ledger.claim("a", "r", alive("r"))
    assert list(ledger.studies()) == ["a", "b"]
    with pytest.raises(ValueError, match="cannot be used"):
        ledger.claim("../x", "r", alive("r"))
    assert Ledger(tmp_path / "none").studies() == {}


def _race(root: str, run_id: str, start: object, results: object) -> None:
    ledger = Ledger(root)
    start.wait()  # type: ignore[attr-defined]
    won = [name for name in (f"s{i}" for i in range(40)) if ledger.claim(name, run_id, lambda r: "running")]
    results.put((run_id, won))  # type: ignore[attr-defined]


def test_racing_processes_never_take_the_same_study(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    procs = [context.Process(target=_race, args=(str(tmp_path), f"run-{i}", start, results)) for i in range(6)]
    for proc in procs:
        proc.start()
    start.set()
    taken = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    owners: dict[str, str] = {}
    for run_id, won in taken:
        for name in won:
            assert name not in owners, f"{name} taken by {owners.get(name)} and {run_id}"
            owners[name] = run_id
    assert len(owners) == 40
    assert {name: Ledger(tmp_path).current(name)[1].run_id for name in owners} == owners  # type: ignore[union-attr]


def test_a_cleared_branch_records_again_in_its_own_run_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, max_attempts=2)
    ledger.claim("s", "run-1", alive("run-1"))
    assert ledger.finish("s", "run-1", ok=False, seconds=1, output="").failures == 1  # type: ignore[union-attr]
    again = ledger.finish("s", "run-1", ok=False, seconds=1, output="")  # the branch was cleared and failed again
    assert again is not None and (again.state, again.failures) == ("failed", 1), "one run counts once"
    done = ledger.finish("s", "run-1", ok=True, seconds=2, output="/o")
    assert done is not None and (done.state, done.failures) == ("done", 0)
    assert ledger.finish("s", "run-1", ok=True, seconds=2, output="/o") is None, "done is final"
    ledger.claim("t", "run-1", alive("run-1"))
    ledger.finish("t", "run-1", ok=False, seconds=1, output="")
    ledger.claim("t", "run-2", alive("run-2"))
    assert ledger.finish("t", "run-1", ok=True, seconds=1, output="") is None, "another run holds it now"
