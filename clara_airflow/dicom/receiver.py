"""``clara-airflow dicom listen``: a DICOM C-ECHO and C-STORE SCP (pynetdicom) in front of the pipelines.

Each instance is written to disk (a temp file, fsync, rename) before success is answered. Instances
are grouped by called AE title and study (or series) UID; a group is complete once no instance has
arrived for the route's ``timeout`` seconds and no association is still sending to it. A complete group
is moved atomically into ``<inbox>/<called AE>/<group UID>/`` with a ``.complete`` file (the marker the
batch mode reads), and for each routed pipeline one DAG run is started with a deterministic run id.

Layout under the inbox: ``.clara-receiver/incoming/<association>/`` (instances of associations still
open; an aborted association's are discarded, as Clara did), ``.clara-receiver/groups/`` (groups still
gathering), ``.clara-receiver/pending/`` (runs to start), and ``_late/`` (instances that arrived for a
group already complete: kept, never processed twice).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import DicomConfig
from clara_airflow.dicom.trigger import AirflowClient, Triggers, run_id_for
from clara_airflow.durable import write_file

log = logging.getLogger("clara_airflow.dicom")

__all__ = ["Receiver", "serve"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SUCCESS, _CANNOT_UNDERSTAND, _OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element of the file meta group (UI values padded to even length)."""
    if len(value) % 2:
        value += b" " if vr == b"SH" else b"\0"
    head = struct.pack("<HH", 2, group_element) + vr
    if vr == b"OB":
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _file_meta(event: Any) -> bytes:
    """Preamble, ``DICM`` and the file meta group of a received instance (PS3.10 7.1), encoded directly:
    pynetdicom's own builds a pydicom dataset per instance, a third of the receiver's CPU time."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    request, transfer_syntax = event.request, event.context.transfer_syntax
    body = (_element(0x0001, b"OB", b"\0\1")
            + _element(0x0002, b"UI", str(request.AffectedSOPClassUID).encode())
            + _element(0x0003, b"UI", str(request.AffectedSOPInstanceUID).encode())
            + _element(0x0010, b"UI", str(transfer_syntax).encode())
            + _element(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode())
            + _element(0x0013, b"SH", str(PYNETDICOM_IMPLEMENTATION_VERSION).encode()))
    return b"\0" * 128 + b"DICM" + struct.pack("<HH", 2, 0) + b"UL" + struct.pack("<HI", 4, len(body)) + body


def _uids(raw: bytes, keyword: str) -> str | None:
    """The ``keyword`` UID of a received instance (its header only is read, never its pixels)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(io.BytesIO(raw), stop_before_pixels=True, specific_tags=[keyword])
    except (InvalidDicomError, ValueError, EOFError, KeyError):
        return None
    return valid_uid(ds.get(keyword))


def _keep(raw: bytes, target: Path) -> int:
    """Write the instance as received to ``target`` durably (:func:`clara_airflow.durable.write_file`), so
    it is on disk before success is answered and no reader ever sees half of it."""
    write_file(target, raw, mode=0o640)
    return len(raw)


def valid_uid(value: object) -> str | None:
    text = str(value or "").strip()
    return text if len(text) <= 64 and _UID.fullmatch(text) else None


@dataclass
class _Association:
    key: str
    calling: str
    called: str
    host: str
    started: float
    instances: int = 0
    bytes: int = 0
    groups: set[str] = field(default_factory=set)


class Receiver:
    """The receiver's state; pynetdicom calls the ``on_*`` handlers from its association threads."""

    def __init__(self, config: DicomConfig, triggers: Triggers | None = None) -> None:
        self.config = config
        self.inbox = Path(config.inbox)
        self.work = self.inbox / ".clara-receiver"
        self.incoming, self.gathering = self.work / "incoming", self.work / "groups"
        for folder in (self.incoming, self.gathering):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.incoming, ignore_errors=True)  # a previous process's open associations were never released
        self.incoming.mkdir()
        self.triggers = triggers or Triggers(self.work / "pending", AirflowClient(config.airflow))
        self._lock = threading.Lock()
        self._open: dict[int, _Association] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._sending: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)
        for called_dir in self.gathering.iterdir():  # groups a previous process was gathering
            for group in called_dir.iterdir():
                self._due[(called_dir.name, group.name)] = time.monotonic()

    # -- associations ---------------------------------------------------------------------------------
    def refusal(self, calling: str, host: str, called: str) -> tuple[str, tuple[int, int, int]] | None:
        """Why an association is refused, with its A-ASSOCIATE-RJ (result, source, diagnostic); None: accepted."""
        if called not in self.config.ae_titles and called != self.config.listen.ae_title:
            return f"called AE title {called!r} is not configured (ae_titles)", (0x01, 0x01, 0x07)
        if self.config.reject_unknown_sources and not any(
                s.ae_title == calling and s.host == host for s in self.config.sources):
            return f"calling AE title {calling!r} from {host} is not in sources", (0x01, 0x01, 0x03)
        free = shutil.disk_usage(self.inbox).free // 2**20
        if free < self.config.min_free_disk_mb:
            return (f"only {free} MiB free in {self.inbox}, below min_free_disk_mb {self.config.min_free_disk_mb}",
                    (0x02, 0x03, 0x02))
        return None

    def on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive  # the A-ASSOCIATE-RQ (the titles are copied over only later)
        calling, called = primitive.calling_ae_title.strip(), primitive.called_ae_title.strip()
        host = assoc.requestor.address
        refused = self.refusal(calling, host, called)
        if refused is not None:
            log.warning("association refused: calling=%s host=%s called=%s reason=%s", calling, host, called,
                        refused[0])
            assoc.acse.send_reject(*refused[1])
            assoc.kill()  # as pynetdicom does after its own rejections: the reject PDU is sent before the socket closes
            return
        with self._lock:
            self._open[id(assoc)] = _Association(f"a{next(self._ids)}", calling, called, host, time.monotonic())

    def on_store(self, event: Any) -> int:
        state = self._open.get(id(event.assoc))
        if state is None:
            return _OUT_OF_RESOURCES
        route = self.config.ae_titles.get(state.called)
        if route is None:
            log.warning("instance refused: calling=%s sent to %s, which routes to no pipeline (ae_titles)",
                        state.calling, state.called)
            return _CANNOT_UNDERSTAND
        key = "StudyInstanceUID" if route.group_by == "study" else "SeriesInstanceUID"
        raw = _file_meta(event) + event.encoded_dataset(include_meta=False)  # as received: never decoded
        group, sop = _uids(raw, key), valid_uid(event.request.AffectedSOPInstanceUID)
        if group is None or sop is None:
            log.warning("instance refused: calling=%s no valid %s or SOP Instance UID", state.calling,
                        "Study Instance UID" if route.group_by == "study" else "Series Instance UID")
            return _CANNOT_UNDERSTAND
        folder = self.incoming / state.key / group
        folder.mkdir(parents=True, exist_ok=True)
        try:
            size = _keep(raw, folder / f"{sop}.dcm")
        except OSError as exc:
            log.error("instance not stored: %s", exc)
            return _OUT_OF_RESOURCES
        with self._lock:
            state.instances += 1
            state.bytes += size
            if group not in state.groups:
                state.groups.add(group)
                self._sending[(state.called, group)] = self._sending.get((state.called, group), 0) + 1
            self._due[(state.called, group)] = time.monotonic() + route.timeout
        return _SUCCESS

    def on_released(self, event: Any) -> None:
        self._close(event.assoc, keep=True)

    def on_aborted(self, event: Any) -> None:
        self._close(event.assoc, keep=False)

    def _close(self, assoc: Any, *, keep: bool) -> None:
        with self._lock:
            state = self._open.pop(id(assoc), None)
            if state is None:
                return
            timeout = self.config.ae_titles[state.called].timeout if state.groups else 0.0
            for group in state.groups:
                if keep:
                    target = self.gathering / state.called / group
                    target.mkdir(parents=True, exist_ok=True)
                    for item in (self.incoming / state.key / group).iterdir():
                        os.replace(item, target / item.name)
                key = (state.called, group)
                self._sending[key] -= 1
                if keep:
                    self._due[key] = time.monotonic() + timeout
                elif not (self.gathering / state.called / group).exists() and not self._sending[key]:
                    self._due.pop(key, None)
        shutil.rmtree(self.incoming / state.key, ignore_errors=True)
        log.info("association %s: calling=%s host=%s called=%s instances=%d bytes=%d seconds=%.2f groups=%s",
                 "released" if keep else "aborted (its instances are discarded)", state.calling, state.host,
                 state.called, state.instances, state.bytes, time.monotonic() - state.started,
                 ",".join(sorted(state.groups)) or "-")

    # -- groups ---------------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Complete every group that has been quiet for its timeout, then send pending triggers."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            ready = [key for key, due in self._due.items() if due <= moment and not self._sending.get(key)]
            for key in ready:
                self._due.pop(key)
                self._sending.pop(key, None)
        for called, group in ready:
            self.complete(called, group)
        self.triggers.flush(moment)

    def complete(self, called: str, group: str) -> None:
        source = self.gathering / called / group
        if not source.is_dir():
            return
        route = self.config.ae_titles[called]
        files = [p for p in source.iterdir() if p.suffix == ".dcm"]
        target = self.inbox / called / group
        if target.exists():  # the group was complete already: never processed twice
            late = self.inbox / "_late" / called / group / time.strftime("%Y%m%dT%H%M%S")
            late.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, late)
            log.warning("group %s of %s was complete already; %d late instances kept in %s, not processed again",
                        group, called, len(files), late)
            return
        (source / ".complete").write_text(f"{len(files)} instances\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        size = sum(p.stat().st_size for p in target.iterdir())
        for pipeline in route.pipelines:
            run_id = run_id_for(pipeline, group, route.priority)
            self.triggers.add(pipeline, run_id, {"clara_payload": str(target), "clara_priority": route.priority},
                              route.priority)
        log.info("group complete: called=%s %s=%s instances=%d bytes=%d folder=%s runs=%s", called, route.group_by,
                 group, len(files), size, target, ",".join(run_id_for(p, group, route.priority) for p in route.pipelines))


def serve(config: DicomConfig, *, stop: threading.Event | None = None, tick: float = 0.2,
          receiver: Receiver | None = None) -> Receiver:
    """Listen until ``stop`` is set (forever without one): the SCP in pynetdicom's threads, groups and
    triggers in this one."""
    from pynetdicom import AE, evt
    from pynetdicom.presentation import AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    rx = receiver or Receiver(config)
    ae = AE(ae_title=config.listen.ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0  # no limit: fewer PDUs per instance
    handlers: list[Any] = [(evt.EVT_REQUESTED, rx.on_requested), (evt.EVT_C_STORE, rx.on_store),
                (evt.EVT_RELEASED, rx.on_released), (evt.EVT_ABORTED, rx.on_aborted),
                (evt.EVT_C_ECHO, lambda event: _SUCCESS)]
    server = ae.start_server((config.listen.host, config.listen.port), block=False, evt_handlers=handlers)
    log.info("listening: ae_title=%s address=%s:%d inbox=%s routes=%s", config.listen.ae_title, config.listen.host,
             config.listen.port, config.inbox, ",".join(f"{k}->{'+'.join(v.pipelines)}"
                                                          for k, v in config.ae_titles.items()))
    assert server is not None  # start_server(block=False) returns the running server
    done = stop or threading.Event()
    try:
        while not done.wait(tick):
            rx.tick()
    finally:
        server.shutdown()
    return rx
