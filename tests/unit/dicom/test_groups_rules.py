"""The receiver's folders (``dicom/groups.py``) on their own: names, counts and messages that no
association test pins."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from clara_airflow.dicom import groups
from clara_airflow.dicom.groups import Folders, adopt, unique


def test_unique_counts_up_from_two(tmp_path: Path) -> None:
    assert unique(tmp_path / "g") == tmp_path / "g"
    (tmp_path / "g").mkdir()
    assert unique(tmp_path / "g") == tmp_path / "g-2"
    (tmp_path / "g-2").mkdir()
    assert unique(tmp_path / "g") == tmp_path / "g-3"


def fill(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_completion_counts_instances_only_and_reports_what_it_did(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    folders.recover(["CT"])
    fill(folders.gathering / "CT" / "1.2", ["a.dcm", "b.dcm", ".hidden.dcm", "notes.txt"])
    seen: list[Path] = []
    target, count, runs = folders.complete("CT", "1.2", lambda t: seen.append(t) or [("p", "run-1"), ("q", "run-2")])
    assert (target, count, runs, seen) == (tmp_path / "CT" / "1.2", 2, ["run-1", "run-2"], [tmp_path / "CT" / "1.2"])
    assert (target / ".complete").read_text() == "2 instances\nrun p run-1\nrun q run-2\n"
    assert Folders.runs_of(target) == [("p", "run-1"), ("q", "run-2")] and Folders.runs_of(tmp_path) is None
    with (target / ".complete").open("a") as marker:  # lines of other kinds (a later version's) name no run
        marker.write("note p run-3\nrun\n")
    assert Folders.runs_of(target) == [("p", "run-1"), ("q", "run-2")]
    assert not (folders.gathering / "CT" / "1.2").exists()


def test_late_instances_go_to_a_timestamped_folder(tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    folders.recover(["CT"])
    fill(folders.gathering / "CT" / "1.2", ["a.dcm", "b.dcm"])
    late, count = folders.late("CT", "1.2")
    assert count == 2 and late.parent == tmp_path / "_late" / "CT" / "1.2"
    assert re.fullmatch(r"\d{8}T\d{6}", late.name) and len(list(late.glob("*.dcm"))) == 2


def test_quarantine_says_how_to_route_the_group_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folders = Folders(tmp_path)
    folders.recover([])
    fill(folders.gathering / "OLD" / "1.2", ["a.dcm"])
    assert folders.recover([]) == []
    target = folders.quarantine / "OLD" / "1.2"
    assert (target / "a.dcm").is_file()
    (record,) = [r for r in caplog.records if r.name.startswith("clara_airflow")]
    assert record.name == "clara_airflow.dicom" and record.levelname == "ERROR"
    assert record.message == (f"group 1.2 was sent to OLD, which is no longer in ae_titles; it is kept in {target} "
                              f"and starts no run. Route OLD again and move the folder back to "
                              f"{folders.gathering / 'OLD'}, or delete it")


def test_recovery_lists_the_groups_that_are_gathering(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folders = Folders(tmp_path)
    folders.recover(["CT"])
    fill(folders.gathering / "CT" / "2", ["a.dcm"])
    fill(folders.incoming / "a3" / "CT" / "1", ["x.dcm", "y.dcm"])
    fill(folders.incoming / "a3" / "CT" / "3", ["z.dcm"])
    fill(folders.incoming / "a4", [])  # an association that had stored nothing yet
    assert folders.recover(["CT"]) == [("CT", "1"), ("CT", "2"), ("CT", "3")]
    assert sorted(p.name for p in (folders.gathering / "CT" / "1").iterdir()) == ["x.dcm", "y.dcm"]
    assert list(folders.incoming.iterdir()) == []
    assert [r.message for r in caplog.records if r.name.startswith("clara_airflow")] == [
        "association a3 was still open when the receiver stopped; its 3 acknowledged instances are kept and join "
        "their groups"]
    work = tmp_path / ".clara-receiver"
    assert (folders.spool, folders.quarantine, folders.tmp) == (work / "pending", work / "quarantine", work / "tmp")


def test_an_instance_from_another_filesystem_is_copied_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received, target = tmp_path / "received.dcm", tmp_path / "kept" / "1.dcm"
    received.write_bytes(b"instance")
    target.parent.mkdir()

    real_replace = os.replace

    def cross_device(source: str, dest: str) -> None:
        if Path(source) == received:  # the temporary file of the copy is on the target's filesystem
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(source, dest)
    monkeypatch.setattr(groups.os, "replace", cross_device)
    handle = os.open(received, os.O_RDONLY)
    try:
        adopt(handle, received, target)
    finally:
        os.close(handle)
    assert target.read_bytes() == b"instance" and oct(target.stat().st_mode & 0o777) == "0o640"


def test_rejoin_moves_an_association_s_instances_and_is_a_no_op_once_they_are_gone(tmp_path: Path) -> None:
    """A completion that failed after its stuck instances had joined the group tries again with the same
    associations: their folders are gone by then, which must not fail the completion for ever."""
    folders = Folders(tmp_path)
    folders.recover(["CT"])
    fill(folders.incoming / "a1" / "CT" / "1.2", ["a.dcm"])
    fill(folders.incoming / "a1" / "CT" / "1.3", ["b.dcm"])
    folders.rejoin("CT", "1.2", ["a1"])
    assert [p.name for p in (folders.gathering / "CT" / "1.2").iterdir()] == ["a.dcm"]
    assert (folders.incoming / "a1" / "CT" / "1.3" / "b.dcm").is_file(), "another group's instance was removed"
    folders.rejoin("CT", "1.3", ["a1"])
    assert not (folders.incoming / "a1").exists()
    folders.rejoin("CT", "1.2", ["a1", "a7"])  # a retry: nothing left to move, nothing raised
    assert [p.name for p in (folders.gathering / "CT" / "1.2").iterdir()] == ["a.dcm"]
