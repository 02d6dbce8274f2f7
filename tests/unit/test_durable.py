"""The one durable-write helper against real filesystems: a full tmpfs, a read-only mount, a writer
killed with -9 half-way."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from clara_airflow.durable import create_file, write_file
from tests.filesystems import full_filesystem, read_only


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_file_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_file(target, "old")
    write_file(target, b"new", mode=0o600)
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert leftovers(tmp_path) == []


def test_on_a_full_disk_the_old_file_stays_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    with full_filesystem(tmp_path / "small", 64) as small:
        target = small / "entry.json"
        write_file(target, "before")
        with pytest.raises(OSError) as raised:
            write_file(target, b"x" * 200_000)
        assert raised.value.errno == errno.ENOSPC
        assert target.read_text() == "before" and leftovers(small) == []
        with pytest.raises(OSError):
            create_file(small / "2.json", b"y" * 200_000)
        assert not (small / "2.json").exists() and leftovers(small) == []


def test_create_says_false_only_when_the_name_exists(tmp_path: Path) -> None:
    assert create_file(tmp_path / "1.json", "first") is True
    assert create_file(tmp_path / "1.json", "second") is False
    assert (tmp_path / "1.json").read_text() == "first" and leftovers(tmp_path) == []


def test_any_other_link_failure_is_an_error_never_another_writer(tmp_path: Path) -> None:
    folder = tmp_path / "ledger"
    folder.mkdir()
    with read_only(folder), pytest.raises(OSError) as raised:
        create_file(folder / "1.json", "claim")
    assert raised.value.errno == errno.EROFS


def test_a_link_that_fails_after_the_content_was_written_is_an_error_too(tmp_path: Path) -> None:
    """The temporary file is written, then the link itself fails (here the kernel refuses the name, as a
    filesystem without hard links refuses every link): an error, and no temporary file left behind."""
    with pytest.raises(OSError) as raised:
        create_file(tmp_path / ("x" * 300), "claim")
    assert raised.value.errno == errno.ENAMETOOLONG and leftovers(tmp_path) == []


def _slow_writer(target: str) -> None:
    def half(out: BinaryIO) -> None:
        out.write(b'{"state": "clai')
        out.flush()
        time.sleep(60)

    write_file(target, half)


def test_a_writer_killed_half_way_leaves_no_half_file_under_the_name(tmp_path: Path) -> None:
    target = tmp_path / "entry.json"
    child = multiprocessing.get_context("fork").Process(target=_slow_writer, args=(str(target),))
    child.start()
    deadline = time.monotonic() + 10
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    assert not target.exists(), "a reader must never see half a file"
    assert leftovers(tmp_path), "the temporary file is hidden (dot name) and only it holds the half write"
    assert all(name.startswith(".") for name in leftovers(tmp_path))
