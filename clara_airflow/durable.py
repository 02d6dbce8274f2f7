"""Durable file writes, one way for the whole package: a reader never sees half a file, and a file
reported as written survives a crash or a power cut.

The content goes to a temporary file in the target's own folder, is flushed and fsynced, and is then
renamed over the target (:func:`write_file`) or hard-linked to it, which fails when the target exists
(:func:`create_file`: the compare-and-set of the batch ledger and the run marker); the folder is
fsynced last, so the new name is on disk too. The temporary file never outlives the call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

__all__ = ["Content", "create_file", "fsync_folder", "write_file"]

Content = bytes | str | Callable[[BinaryIO], None]  # a writer is called with the open temporary file


def fsync_folder(folder: str | Path) -> None:
    """Make the folder's entries (a new or renamed name) durable."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _temporary(path: Path, content: Content, mode: int) -> str:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:60]}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            if callable(content):
                content(out)
            else:
                out.write(content.encode("utf-8") if isinstance(content, str) else content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return temp


def write_file(path: str | Path, content: Content, *, mode: int = 0o644) -> Path:
    """Write ``content`` to ``path`` durably, replacing what was there.

    :raises OSError: as the filesystem reports it (ENOSPC, EACCES, ...); ``path`` is then unchanged.
    """
    target = Path(path)
    temp = _temporary(target, content, mode)
    try:
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_folder(target.parent)
    return target


def create_file(path: str | Path, content: Content, *, mode: int = 0o644) -> bool:
    """Create ``path`` with ``content`` durably, only if it does not exist: False when it does (another
    writer won). The link is atomic on local filesystems and NFS alike.

    :raises OSError: any other failure (EPERM on a filesystem without hard links, EACCES, ENOSPC): never
        read as "another writer won".
    """
    target = Path(path)
    temp = _temporary(target, content, mode)
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)
    fsync_folder(target.parent)
    return True
