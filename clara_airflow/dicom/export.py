"""Sending DICOM files to a destination by C-STORE (pynetdicom as SCU), with retries: what the built-in
register-results task does. No Airflow here.

Only what the pipeline wrote leaves: regular files inside the input folders, found without following a
symbolic link (a link a step wrote, to a file or a folder, is skipped and counted, as are FIFOs, devices
and files that are not DICOM Part 10). Each file is offered in its own transfer syntax (JPEG, JPEG 2000,
RLE, deflate included), and a retry sends only the instances the destination has not stored yet.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clara_airflow.dicom.config import Destination
from clara_airflow.errors import ClaraAirflowError

__all__ = ["Found", "SendError", "SendResult", "dicom_files", "send_files"]

log = logging.getLogger("clara_airflow.dicom")
MAX_CONTEXTS = 128  # presentation contexts per association (odd ids 1-255)
_OK = (0x0000, 0xB000, 0xB007, 0xB006)  # success, or warnings (coercion, elements discarded)


@dataclass(frozen=True)
class SendResult:
    destination: str
    instances: int
    attempts: int
    seconds: float


class SendError(ClaraAirflowError):
    """Some instances were not stored after every try; ``sent`` and ``failed`` count them."""

    def __init__(self, message: str, sent: int, failed: int) -> None:
        super().__init__(message)
        self.sent, self.failed = sent, failed


@dataclass
class Found:
    """What the input folders hold: the DICOM files to send, and what was skipped and why."""

    files: list[Path] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    not_dicom: int = 0

    @property
    def skipped(self) -> int:
        return len(self.links) + len(self.special) + self.not_dicom


def _is_part10(path: Path) -> bool | None:
    """Whether a regular file (opened without following a link, never blocking) is DICOM Part 10
    (``DICM`` after the 128-byte preamble); None when it is not a regular file after all."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        return os.pread(handle, 4, 128) == b"DICM"
    finally:
        os.close(handle)


def dicom_files(folders: Iterable[str | Path]) -> Found:
    """Every DICOM Part 10 regular file below the folders, sorted; links and special files are skipped."""
    found = Found()
    for folder in folders:
        if os.path.islink(folder):
            found.links.append(str(folder))
            continue
        for here, dirs, names in os.walk(folder):  # never descends into a linked folder
            found.links += [os.path.join(here, d) for d in dirs if os.path.islink(os.path.join(here, d))]
            for name in names:
                path = Path(here) / name
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    continue
                if stat.S_ISLNK(mode):
                    found.links.append(str(path))
                elif not stat.S_ISREG(mode):
                    found.special.append(str(path))
                else:
                    part10 = _is_part10(path)
                    if part10 is None:
                        found.special.append(str(path))
                    elif part10:
                        found.files.append(path)
                    else:
                        found.not_dicom += 1
    found.files.sort()
    return found


def send_files(files: list[Path], name: str, destination: Destination, *, calling_aet: str = "CLARA",
               attempts: int = 3, backoff: float = 2.0, sleep: Callable[[float], None] = time.sleep,
               timeout: float = 30.0) -> SendResult:
    """C-STORE every file to ``destination``; a try that fails (a refusal, a lost association, any
    pynetdicom error) is repeated (``attempts`` in all, waiting ``backoff``, then twice that, ...), sending
    only what was not stored yet. ``timeout``: seconds to wait for the destination's answer to the
    association request and to each C-STORE (pynetdicom's ACSE and DIMSE time-outs).

    :raises SendError: naming the destination, the DICOM status or network error, and the count.
    """
    began = time.monotonic()
    stored: set[Path] = set()
    problem = ""
    for attempt in range(1, attempts + 1):
        remaining = [f for f in files if f not in stored]
        try:
            problem = _send_once(remaining, destination, calling_aet, stored, timeout)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        left = len(files) - len(stored)
        if not left:
            return SendResult(name, len(files), attempt, time.monotonic() - began)
        log.warning("destination %s (%s@%s:%d), try %d of %d: %s; %d of %d instances not stored yet", name,
                    destination.ae_title, destination.host, destination.port, attempt, attempts, problem,
                    left, len(files))
        if attempt < attempts:
            sleep(backoff * 2 ** (attempt - 1))
    raise SendError(f"destination {name} ({destination.ae_title}@{destination.host}:{destination.port}): "
                    f"{problem}; {len(files) - len(stored)} of {len(files)} instances were not stored after "
                    f"{attempts} tries", len(stored), len(files) - len(stored))


def _syntaxes(files: list[Path]) -> dict[Path, tuple[str, str]]:
    """(SOP class, transfer syntax) of each file, from its header."""
    from pydicom import dcmread

    found = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        found[path] = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    return found


def _send_once(files: list[Path], destination: Destination, calling_aet: str, stored: set[Path],
               timeout: float) -> str:
    """One try: an association per up to :data:`MAX_CONTEXTS` (SOP class, transfer syntax) pairs; each
    instance stored is added to ``stored`` as soon as it is. Returns the last problem ('' when none)."""
    from pynetdicom import AE

    kinds = _syntaxes(files)
    pairs = sorted(set(kinds.values()))
    problem = ""
    for start in range(0, len(pairs), MAX_CONTEXTS):
        chunk = set(pairs[start:start + MAX_CONTEXTS])
        ae = AE(ae_title=calling_aet)
        ae.acse_timeout = ae.dimse_timeout = timeout
        for sop_class, syntax in sorted(chunk):
            ae.add_requested_context(sop_class, [syntax])
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            problem = "association rejected" if assoc.is_rejected else "no association (is the destination up?)"
            continue
        try:
            for path in (f for f in files if kinds[f] in chunk):
                status = assoc.send_c_store(path)  # sent from the file as it is, not decoded and re-encoded
                code = getattr(status, "Status", None)
                if code is None:
                    problem = "no answer to C-STORE (connection lost or timed out)"
                    if not assoc.is_established:
                        break
                elif code in _OK:
                    stored.add(path)
                else:
                    problem = f"C-STORE of {path.name} answered DICOM status 0x{code:04X}"
        finally:
            if assoc.is_established:
                assoc.release()
    return problem
