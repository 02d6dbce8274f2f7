"""Real filesystems that misbehave, for the tests of what the disk hands us: a full one (a tiny tmpfs)
and a read-only one (a read-only bind mount). Needs root (CI and the test machines run as root); elsewhere
the tests that use them are skipped, and under CI=true they fail instead."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        if os.environ.get("CI"):
            raise RuntimeError(f"mount {' '.join(args)} failed: {done.stderr.strip()}")
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); the test needs root")


@contextmanager
def full_filesystem(folder: Path, size_kib: int = 64) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` at ``folder``: writes past it fail with ENOSPC, as on a full disk."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only over itself: every write and link fails with EROFS."""
    _mount("--bind", str(folder), str(folder))
    try:
        _mount("-o", "remount,bind,ro", str(folder))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
