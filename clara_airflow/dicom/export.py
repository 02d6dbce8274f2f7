"""Sending DICOM files to a destination by C-STORE (pynetdicom as SCU), with retries: what the built-in
register-results task does. No Airflow here."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clara_airflow.dicom.config import Destination
from clara_airflow.errors import ClaraAirflowError

__all__ = ["SendResult", "dicom_files", "send_files"]

log = logging.getLogger("clara_airflow.dicom")


@dataclass(frozen=True)
class SendResult:
    destination: str
    instances: int
    attempts: int
    seconds: float


def dicom_files(folders: Iterable[str | Path]) -> list[Path]:
    """Every DICOM Part 10 file (``DICM`` after the 128-byte preamble) below the folders, sorted."""
    found = []
    for folder in folders:
        for here, _, names in os.walk(folder):
            for name in names:
                path = Path(here) / name
                try:
                    with open(path, "rb") as handle:
                        handle.seek(128)
                        if handle.read(4) == b"DICM":
                            found.append(path)
                except OSError:
                    continue
    return sorted(found)


def send_files(files: list[Path], name: str, destination: Destination, *, calling_aet: str = "CLARA",
               attempts: int = 3, backoff: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> SendResult:
    """C-STORE every file to ``destination``; a try that fails is repeated (``attempts`` in all, waiting
    ``backoff``, then twice that, ...), sending only what was not stored yet.

    :raises ClaraAirflowError: naming the destination and the DICOM status or network error.
    """
    began = time.monotonic()
    remaining = list(files)
    problem = ""
    for attempt in range(1, attempts + 1):
        remaining, problem = _send_once(remaining, destination, calling_aet)
        if not remaining:
            return SendResult(name, len(files), attempt, time.monotonic() - began)
        log.warning("destination %s (%s@%s:%d), try %d of %d: %s; %d of %d instances not stored yet", name,
                    destination.ae_title, destination.host, destination.port, attempt, attempts, problem,
                    len(remaining), len(files))
        if attempt < attempts:
            sleep(backoff * 2 ** (attempt - 1))
    raise ClaraAirflowError(f"destination {name} ({destination.ae_title}@{destination.host}:{destination.port}): "
                            f"{problem}; {len(remaining)} of {len(files)} instances were not stored after "
                            f"{attempts} tries")


def _send_once(files: list[Path], destination: Destination, calling_aet: str) -> tuple[list[Path], str]:
    from pydicom import dcmread
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title=calling_aet)
    wanted = {str(dcmread(path, specific_tags=["SOPClassUID"]).SOPClassUID) for path in files}
    for context in StoragePresentationContexts:
        if context.abstract_syntax in wanted:
            ae.add_requested_context(context.abstract_syntax)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "no association (is the destination up?)"
        return files, why
    failed: list[Path] = []
    problem = ""
    try:
        for path in files:
            status = assoc.send_c_store(path)  # sent from the file as it is, not decoded and re-encoded
            code = getattr(status, "Status", None)
            if code is None:
                failed.append(path)
                problem = "no answer to C-STORE (connection lost or timed out)"
            elif code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or warnings (coercion, elements)
                failed.append(path)
                problem = f"C-STORE of {path.name} answered DICOM status 0x{code:04X}"
    finally:
        if assoc.is_established:
            assoc.release()
    return failed, problem
