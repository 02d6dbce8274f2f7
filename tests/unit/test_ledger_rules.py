"""The study ledger's rules one by one: the entries on disk, byte for byte, each transition the protocol
allows or refuses, and what its errors say. test_batch_ledger.py races real processes against it."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from clara_airflow.batch.ledger import CORRUPT, Entry, Ledger
from clara_airflow.errors import ClaraAirflowError


def dead(run_id: str) -> str:
    return "failed"


def files(ledger: Ledger, study: str) -> list[str]:
    return sorted(os.listdir(ledger.root / study), key=lambda n: (len(n), n))


def test_an_entry_is_a_value_with_empty_defaults() -> None:
    assert dataclasses.astuple(Entry("claimed")) == ("claimed", "", 0, 0.0, "", 0.0, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Entry("done").state = "claimed"  # type: ignore[misc]


def test_each_entry_is_one_numbered_file_of_sorted_json_readable_by_its_group(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.claim("ct-1", "run-1", dead)
    assert ledger.finish("ct-1", "run-1", ok=True, seconds=1.23456, output="/out/ct-1") is not None
    assert files(ledger, "ct-1") == ["1.json", "2.json"]
    raw = (tmp_path / "ct-1" / "2.json").read_text()
    data = json.loads(raw)
    assert raw == json.dumps(data, sort_keys=True) and list(data) == sorted(data)
    assert {k: v for k, v in data.items() if k != "at"} == {"state": "done", "run_id": "run-1", "failures": 0,
                                                             "seconds": 1.235, "output": "/out/ct-1", "detail": ""}
    assert stat.S_IMODE((tmp_path / "ct-1" / "2.json").stat().st_mode) == 0o640


def test_one_failure_gives_a_study_up_by_default(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.max_attempts == 1 and Ledger(tmp_path, 0).max_attempts == 1
    ledger.claim("ct-1", "run-1", dead)
    assert ledger.finish("ct-1", "run-1", ok=False, seconds=1, output="").state == "given-up"


def test_a_given_up_branch_cleared_and_run_again_by_its_run_records_again(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.claim("ct-1", "run-1", dead)
    ledger.finish("ct-1", "run-1", ok=False, seconds=1, output="")
    again = ledger.finish("ct-1", "run-1", ok=True, seconds=2, output="/out")
    assert again is not None and (again.state, again.failures) == ("done", 0)
    assert ledger.finish("ct-1", "run-2", ok=True, seconds=2, output="/out") is None  # never its run
    assert files(ledger, "ct-1") == ["1.json", "2.json", "3.json"]


def test_release_needs_this_run_s_claim(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.release("never-seen", "run-1", "services") is None
    ledger.claim("ct-1", "run-1", dead)
    assert ledger.release("ct-1", "run-2", "services") is None
    released = ledger.release("ct-1", "run-1", "its services could not start")
    assert released is not None and (released.state, released.detail) == ("waiting", "its services could not start")
    assert ledger.release("ct-1", "run-1", "again") is None  # no longer claimed
    assert files(ledger, "ct-1") == ["1.json", "2.json"]


@pytest.mark.parametrize("state", ["failed", "given-up"])
def test_a_failed_or_given_up_study_is_offered_again_as_a_new_entry(tmp_path: Path, state: str) -> None:
    ledger = Ledger(tmp_path, max_attempts=1 if state == "given-up" else 3)
    ledger.claim("ct-1", "run-1", dead)
    assert ledger.finish("ct-1", "run-1", ok=False, seconds=1, output="").state == state
    offered = ledger.offer_again("ct-1")
    assert (offered.state, offered.failures, offered.run_id) == ("offered", 0, "")
    assert files(ledger, "ct-1") == ["1.json", "2.json", "3.json"]


def test_only_failed_given_up_or_corrupt_studies_can_be_offered_and_the_error_says_what_it_is(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with pytest.raises(ValueError) as unknown:
        ledger.offer_again("ct-9")
    assert str(unknown.value) == "study 'ct-9' is unknown; only a failed, given-up or corrupt study can be offered again"
    ledger.claim("ct-1", "run-1", dead)
    with pytest.raises(ValueError, match=r"^study 'ct-1' is claimed; only a failed"):
        ledger.offer_again("ct-1")


def test_an_offer_that_loses_the_race_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(tmp_path)
    ledger.claim("ct-1", "run-1", dead)
    ledger.finish("ct-1", "run-1", ok=False, seconds=1, output="")
    monkeypatch.setattr(ledger, "_write", lambda study, version, entry: False)
    with pytest.raises(ValueError) as lost:
        ledger.offer_again("ct-1")
    assert str(lost.value) == "study 'ct-1' changed while it was offered again; look at it and retry"


def test_stray_files_in_a_study_folder_are_not_entries(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.claim("ct-1", "run-1", dead)
    for stray in ("notes.json", "3.json.tmp", ".2.json.abc.tmp", "README"):
        (tmp_path / "ct-1" / stray).write_text("{}")
    version, entry = ledger.current("ct-1")
    assert version == 1 and entry is not None and entry.state == "claimed"


@pytest.mark.parametrize(("content", "detail"), [
    ('{"state": 5, "failures": 0}', "TypeError: state or failures of the wrong type"),
    ('{"state": "done", "failures": "1"}', "TypeError: state or failures of the wrong type"),
    ('{"state": "done", "unknown": 1, "failures": 1}', None),  # unknown keys of a newer version are ignored
    ("[1]", "AttributeError: 'list' object has no attribute 'items'"),
])
def test_an_entry_of_the_wrong_shape_is_corrupt_with_its_reason(tmp_path: Path, content: str,
                                                                 detail: str | None) -> None:
    (tmp_path / "ct-1").mkdir()
    (tmp_path / "ct-1" / "1.json").write_text(content)
    version, entry = Ledger(tmp_path).current("ct-1")
    assert version == 1 and entry is not None
    if detail is None:
        assert (entry.state, entry.failures) == ("done", 1)
    else:
        assert (entry.state, entry.output, entry.detail) == (CORRUPT, str(tmp_path / "ct-1" / "1.json"), detail)


def test_a_study_name_that_is_no_folder_name_is_refused_before_any_disk_access(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        Ledger(tmp_path / "nothing-here").current("../x")
    assert str(refused.value) == "study name '../x' cannot be used: it is not a single folder name"


def test_a_ledger_that_cannot_be_read_names_the_path_the_error_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "ledger").write_text("a file where the ledger folder should be")
    with pytest.raises(ClaraAirflowError) as failed:
        Ledger(tmp_path / "ledger").claim("ct-1", "run-1", dead)
    assert str(failed.value) == (f"the study ledger cannot read {tmp_path}/ledger/ct-1: Not a directory (errno 20); "
                                 "the ledger needs a readable and writable local or NFS folder "
                                 "(x-airflow payload.output_root)")
    with pytest.raises(ClaraAirflowError, match=f"^the study ledger cannot read {tmp_path}/ledger: Not a directory"):
        Ledger(tmp_path / "ledger").studies()


def test_a_ledger_that_cannot_be_written_names_the_path_the_error_and_the_fix(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, content: str, *, mode: int) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("clara_airflow.batch.ledger.create_file", full)
    with pytest.raises(ClaraAirflowError) as failed:
        Ledger(tmp_path).claim("ct-1", "run-1", dead)
    assert str(failed.value) == (f"the study ledger cannot write {tmp_path}/ct-1/1.json: No space left on device "
                                 "(errno 28); the ledger needs a writable local or NFS folder with hard links "
                                 "(x-airflow payload.output_root)")
