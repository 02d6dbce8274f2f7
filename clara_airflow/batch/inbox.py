"""The inbox of a batch pipeline: each direct sub-folder is one study, named by its folder.

A study is complete when it holds a file named ``.complete`` (what the DICOM receiver writes), or when
nothing below it changed for ``quiet_seconds``. Hidden names (``.``), names starting with ``_`` and
names unsafe as a path component are skipped, the unsafe ones with a warning. No Airflow here.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from clara_airflow.errors import ClaraAirflowError

__all__ = ["COMPLETE_MARKER", "MAX_NAME_BYTES", "SUMMARY_FILE", "Study", "fingerprint", "safe_study_name", "scan_inbox"]

COMPLETE_MARKER = ".complete"
SUMMARY_FILE = "batch-summary.json"  # what a batch run writes beside its studies' folders
RUN_FILES = (SUMMARY_FILE,)  # names in a run folder that are not studies (the others start with ".")
MAX_NAME_BYTES = 200
_MAX_ENTRIES = 100_000  # files looked at per study for the quiet-time rule


@dataclass(frozen=True)
class Study:
    """One complete study of the inbox: its name and its folder (the run's payload)."""

    name: str
    folder: str


def fingerprint(folder: str | Path) -> str:
    """What a study held, for the tombstone retention leaves in the ledger: a digest of every regular
    file's relative path and size (symbolic links are not followed). Names and sizes, not bytes: a study
    of gigabytes is fingerprinted in milliseconds, and a study sent again changes its names or sizes
    unless it is the same study (an edit that keeps every size is offered again with ``studies --retry``)."""
    import hashlib

    digest = hashlib.sha256()
    root = Path(folder)
    for here, dirs, names in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(names):
            path = Path(here) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                digest.update(f"{path.relative_to(root)}\0{info.st_size}\n".encode("utf-8", "surrogateescape"))
    return f"sha256:{digest.hexdigest()}"


def safe_study_name(name: str) -> str | None:
    """Why ``name`` cannot be a path component of the output layout, or None when it can."""
    if name in (".", "..") or "/" in name or "\\" in name:
        return "it is not a single folder name"
    if name in RUN_FILES:
        return "the run writes a file of that name beside its studies' folders"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"it is over {MAX_NAME_BYTES} bytes"
    return None


def scan_inbox(inbox: str, quiet_seconds: int, *, now: float | None = None,
               warn: object = None) -> tuple[list[Study], list[str]]:
    """(complete studies sorted by name, names of incomplete ones) of ``inbox``.

    :raises ClaraAirflowError: the inbox is missing or unreadable, naming it and the fix.
    """
    root = Path(inbox)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise ClaraAirflowError(f"the batch inbox {inbox} does not exist; create it (the folder studies arrive "
                                "in) or fix x-airflow batch.inbox") from None
    except (NotADirectoryError, PermissionError) as exc:
        raise ClaraAirflowError(f"the batch inbox {inbox} cannot be read ({exc.strerror}); it must be a folder the "
                                "Airflow worker may read") from None
    moment = time.time() if now is None else now
    complete, waiting = [], []
    for entry in entries:
        if entry.name.startswith((".", "_")) or not entry.is_dir(follow_symlinks=False):
            continue
        problem = safe_study_name(entry.name)
        if problem is not None:
            if callable(warn):
                warn(f"skipping study folder {entry.name!r} in {inbox}: {problem}; rename it")
            continue
        if _is_complete(Path(entry.path), quiet_seconds, moment):
            complete.append(Study(entry.name, entry.path))
        else:
            waiting.append(entry.name)
    return complete, waiting


def _is_complete(folder: Path, quiet_seconds: int, now: float) -> bool:
    if (folder / COMPLETE_MARKER).is_file():
        return True
    newest, seen = folder.lstat().st_mtime, 0
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            seen += 1
            if seen > _MAX_ENTRIES:
                return False  # too big to judge by time: it needs a .complete file
            try:
                info = os.lstat(os.path.join(here, name))
            except FileNotFoundError:
                return False  # changing right now
            newest = max(newest, info.st_mtime)
            if stat.S_ISLNK(info.st_mode):
                continue
    return now - newest >= quiet_seconds
