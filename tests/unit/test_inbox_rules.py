"""The inbox's rules, one by one: which names are studies, when a study is complete, and what the
errors and warnings say (an operator reads them in a task log at 3 a.m.)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from clara_airflow.batch import inbox
from clara_airflow.batch.inbox import Study, safe_study_name, scan_inbox
from clara_airflow.errors import ClaraAirflowError

T = 1_700_000_000.0  # a fixed moment: every mtime below is set relative to it


@pytest.mark.parametrize(("name", "problem"), [
    (".", "it is not a single folder name"),
    ("..", "it is not a single folder name"),
    ("a/b", "it is not a single folder name"),
    ("a\\b", "it is not a single folder name"),
    ("batch-summary.json", "the run writes a file of that name beside its studies' folders"),
    ("a\x00b", "it holds a control character"),
    ("a\x1fb", "it holds a control character"),
    ("a\x7fb", "it holds a control character"),
    ("tab\there", "it holds a control character"),
    ("é" * 100 + "x", "it is over 200 bytes"),  # 201 bytes in UTF-8
    ("a b", None),  # a space (0x20) is the first character that is not a control character
    ("é" * 100, None),  # exactly 200 bytes
    ("caf\udce9", None),  # a name that was not UTF-8 on disk (os.fsdecode's surrogate escape): 4 bytes
    ("1.2.840.113619.2.55.3", None),
    ("batch-summary.json.old", None),
])
def test_a_study_name_is_one_safe_folder_name(name: str, problem: str | None) -> None:
    assert safe_study_name(name) == problem


def test_a_study_is_a_value() -> None:
    study = Study("ct-1", "/inbox/ct-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "ct-2"  # type: ignore[misc]
    assert study == Study("ct-1", "/inbox/ct-1") and len({study, Study("ct-1", "/inbox/ct-1")}) == 1


def test_a_missing_inbox_says_what_to_create_or_fix(tmp_path: Path) -> None:
    with pytest.raises(ClaraAirflowError) as missing:
        scan_inbox(str(tmp_path / "none"), 60)
    assert str(missing.value) == (f"the batch inbox {tmp_path}/none does not exist; create it (the folder studies "
                                  "arrive in) or fix x-airflow batch.inbox")


def test_an_inbox_that_is_a_file_says_it_must_be_a_readable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClaraAirflowError) as unreadable:
        scan_inbox(str(tmp_path / "file"), 60)
    assert str(unreadable.value) == (f"the batch inbox {tmp_path}/file cannot be read (Not a directory); it must be "
                                     "a folder the Airflow worker may read")


def old(path: Path, at: float = T) -> Path:
    os.utime(path, (at, at), follow_symlinks=False)
    return path


def study(root: Path, name: str, files: int = 1, at: float = T) -> Path:
    folder = root / name
    folder.mkdir()
    for n in range(files):
        (folder / f"{n:03d}.dcm").write_bytes(b"DICM")
        old(folder / f"{n:03d}.dcm", at)
    return old(folder, at)


def test_only_plain_sub_folders_with_safe_names_are_studies_and_unsafe_ones_are_warned_about(tmp_path: Path) -> None:
    for name in ("b-study", "a-study", ".hidden", "_incoming", "batch-summary.json"):
        study(tmp_path, name)
    (tmp_path / "loose.dcm").write_bytes(b"DICM")
    elsewhere = study(tmp_path / "..", f"{tmp_path.name}-elsewhere")
    (tmp_path / "linked").symlink_to(elsewhere)  # a link is not a study, even to a complete folder
    warnings: list[str] = []
    complete, waiting = scan_inbox(str(tmp_path), 60, now=T + 60, warn=warnings.append)
    assert complete == [Study("a-study", str(tmp_path / "a-study")), Study("b-study", str(tmp_path / "b-study"))]
    assert waiting == []
    assert warnings == [f"skipping study folder 'batch-summary.json' in {tmp_path}: the run writes a file of that "
                        "name beside its studies' folders; rename it"]
    assert scan_inbox(str(tmp_path), 60, now=T + 60, warn=None) == (complete, waiting)  # no warner: still skipped


def test_quiet_for_exactly_quiet_seconds_is_complete_and_one_second_less_is_not(tmp_path: Path) -> None:
    study(tmp_path, "ct")
    assert scan_inbox(str(tmp_path), 60, now=T + 60)[0] == [Study("ct", str(tmp_path / "ct"))]
    assert scan_inbox(str(tmp_path), 60, now=T + 59.5) == ([], ["ct"])


def test_the_newest_file_anywhere_below_the_study_counts(tmp_path: Path) -> None:
    folder = study(tmp_path, "ct", files=3)
    (folder / "series-2").mkdir()
    (folder / "series-2" / "late.dcm").write_bytes(b"DICM")
    old(folder / "series-2" / "late.dcm", T + 500)
    old(folder / "series-2")
    old(folder)
    assert scan_inbox(str(tmp_path), 60, now=T + 559)[1] == ["ct"]
    assert scan_inbox(str(tmp_path), 60, now=T + 560)[0] == [Study("ct", str(folder))]


def test_a_link_inside_a_study_is_judged_by_itself_and_the_files_after_it_still_count(tmp_path: Path) -> None:
    folder = study(tmp_path, "ct", files=0)
    target = tmp_path / "_elsewhere"
    target.mkdir()
    (folder / "a-link").symlink_to(target)  # os.walk lists it among the folders, before the files
    old(folder / "a-link")
    (folder / "z-new.dcm").write_bytes(b"DICM")
    old(folder / "z-new.dcm", T + 300)
    old(folder)
    assert scan_inbox(str(tmp_path), 60, now=T + 100) == ([], ["ct"])
    assert scan_inbox(str(tmp_path), 60, now=T + 360)[0] == [Study("ct", str(folder))]


def test_a_complete_marker_makes_a_study_complete_at_once(tmp_path: Path) -> None:
    folder = study(tmp_path, "ct", at=T + 1000)
    assert scan_inbox(str(tmp_path), 60, now=T + 1000) == ([], ["ct"])
    (folder / ".complete").write_text("")
    assert scan_inbox(str(tmp_path), 60, now=T + 1000)[0] == [Study("ct", str(folder))]


def test_a_study_with_more_entries_than_the_cap_needs_a_complete_marker(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert inbox._MAX_ENTRIES == 100_000  # the README's figure
    monkeypatch.setattr(inbox, "_MAX_ENTRIES", 3)
    study(tmp_path, "three", files=3)
    study(tmp_path, "four", files=4)
    assert scan_inbox(str(tmp_path), 60, now=T + 3600) == ([Study("three", str(tmp_path / "three"))], ["four"])
    (tmp_path / "four" / ".complete").write_text("")
    assert [s.name for s in scan_inbox(str(tmp_path), 60, now=T + 3600)[0]] == ["four", "three"]


def test_a_file_that_vanishes_while_looked_at_means_the_study_is_still_changing(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    study(tmp_path, "ct", files=3)
    real = os.lstat

    def lstat(path: str | os.PathLike[str]) -> os.stat_result:
        if str(path).endswith("001.dcm"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(inbox.os, "lstat", lstat)
    assert scan_inbox(str(tmp_path), 60, now=T + 3600) == ([], ["ct"])
