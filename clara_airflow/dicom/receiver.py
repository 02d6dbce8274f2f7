"""``clara-airflow dicom listen``: a DICOM C-ECHO and C-STORE SCP (pynetdicom) in front of the pipelines.

Each instance is written to disk as it arrives (pynetdicom's chunked reception, into
``.clara-receiver/tmp/``), fsynced and renamed into its association's folder before success is
answered: one large instance never sits in memory. Instances are grouped by called AE title and study
(or series) UID; a group is complete once no instance has arrived for the route's ``timeout`` seconds
and no association is still sending to it. A complete group is moved into ``<inbox>/<called AE>/<group
UID>/`` with a ``.complete`` file (the marker the batch mode reads), and one DAG run per routed pipeline
is started by the trigger sender (:mod:`clara_airflow.dicom.trigger`), in its own thread. The folders,
and why no acknowledged instance is lost, are in :mod:`clara_airflow.dicom.groups`.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import DicomConfig
from clara_airflow.dicom.groups import Folders, adopt
from clara_airflow.dicom.health import refusal_reason
from clara_airflow.dicom.routing import Values, decide, header_uid, header_values, keywords_of, valid_uid
from clara_airflow.dicom.trigger import AirflowClient, Triggers, run_id_for

log = logging.getLogger("clara_airflow.dicom")

__all__ = ["Receiver"]

_SUCCESS, _CANNOT_UNDERSTAND, _OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700
RETRY_COMPLETION = 5.0  # seconds before a completion that hit a disk error is tried again


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
        self.folders = Folders(config.inbox)
        self.inbox = self.folders.inbox
        self.triggers = triggers or Triggers(self.folders.spool, AirflowClient(config.airflow))
        self._lock = threading.Lock()
        self._open: dict[int, _Association] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._sending: dict[tuple[str, str], int] = {}
        self._stuck: dict[tuple[str, str], set[str]] = {}  # per group: associations whose instances could not join it
        self._ids = itertools.count(1)
        self.counts: Counter[str] = Counter()  # for /metrics: instances, bytes, completed, routed, refused:<reason>
        self._keywords = {called: keywords_of(route) for called, route in config.ae_titles.items()}
        self._seen: dict[tuple[str, str], set[Values]] = {}  # routing values read at reception, per group
        self._recovered = set(self.folders.recover(self.config.ae_titles))  # groups a previous process gathered
        for key in self._recovered:  # (their instances' values were never seen here: routing reads the files)
            self._due[key] = time.monotonic()

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
        if len(self._open) >= self.config.max_associations:
            return (f"{len(self._open)} associations are open, the limit is max_associations "
                    f"{self.config.max_associations}", (0x02, 0x03, 0x02))
        return None

    def on_requested(self, event: Any) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive  # the A-ASSOCIATE-RQ (the titles are copied over only later)
        calling, called = primitive.calling_ae_title.strip(), primitive.called_ae_title.strip()
        host = assoc.requestor.address
        with self._lock:  # the limit and the count are checked and changed together
            refused = self.refusal(calling, host, called)
            if refused is None:
                self._open[id(assoc)] = _Association(f"a{next(self._ids)}", calling, called, host, time.monotonic())
        if refused is not None:
            self.counts[f"refused:{refusal_reason(refused[0])}"] += 1
            log.warning("association refused: calling=%s host=%s called=%s reason=%s", calling, host, called,
                        refused[0])
            assoc.acse.send_reject(*refused[1])
            assoc.kill()  # as pynetdicom does after its own rejections: the reject PDU is sent before the socket closes

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
        sop = valid_uid(event.request.AffectedSOPInstanceUID)
        received = Path(event.dataset_path)  # written as it arrived; pynetdicom removes what is left of it
        try:
            handle = os.open(received, os.O_RDONLY)
        except OSError as exc:
            log.error("instance not stored (calling=%s): %s", state.calling, exc)
            return _OUT_OF_RESOURCES
        try:
            size = os.fstat(handle).st_size
            if size > self.config.max_instance_mb * 2**20:
                log.warning("instance refused: calling=%s sent %d MiB in one instance, above max_instance_mb %d",
                            state.calling, size // 2**20, self.config.max_instance_mb)
                return _OUT_OF_RESOURCES
            group, values = self._header(state.called, handle, received, key)
            if group is None or sop is None:
                log.warning("instance refused: calling=%s no valid %s or SOP Instance UID", state.calling,
                            "Study Instance UID" if route.group_by == "study" else "Series Instance UID")
                return _CANNOT_UNDERSTAND
            folder = self.folders.incoming / state.key / state.called / group
            if group not in state.groups:
                folder.mkdir(parents=True, exist_ok=True)
            adopt(handle, received, folder / f"{sop}.dcm")
        except OSError as exc:
            log.error("instance not stored (calling=%s): %s", state.calling, exc)
            return _OUT_OF_RESOURCES
        finally:
            os.close(handle)
        with self._lock:
            state.instances += 1
            state.bytes += size
            self.counts.update(instances=1, bytes=size)
            if values is not None:
                self._seen.setdefault((state.called, group), set()).add(values)
            if group not in state.groups:
                state.groups.add(group)
                self._sending[(state.called, group)] = self._sending.get((state.called, group), 0) + 1
            self._due[(state.called, group)] = time.monotonic() + route.timeout
        return _SUCCESS

    def _header(self, called: str, handle: int, received: Path, key: str) -> tuple[str | None, Values | None]:
        """The group UID of a received instance, and its routing values when its AE title has rules (read
        with the UID, from the whole header)."""
        keywords = self._keywords[called]
        if not keywords:
            return header_uid(handle, received, key), None
        found, values = header_values(received, key, keywords)
        return valid_uid(found), values

    def on_released(self, event: Any) -> None:
        self._close(event.assoc, keep=True)

    def on_aborted(self, event: Any) -> None:
        self._close(event.assoc, keep=False)

    def _close(self, assoc: Any, *, keep: bool) -> None:
        with self._lock:
            state = self._open.pop(id(assoc), None)
            if state is None:
                return
            route = self.config.ae_titles.get(state.called)
            timeout = route.timeout if route is not None else 0.0  # None: the listener's own title (C-ECHO), no groups
            stuck: list[str] = []  # groups whose instances stay in incoming/
            for group in state.groups:
                key = (state.called, group)
                if keep:
                    try:
                        self.folders.merge(self.folders.incoming / state.key / state.called / group,
                                           self.folders.gathering / state.called / group)
                    except OSError as exc:  # kept in incoming/: they join their group before it completes
                        stuck.append(group)
                        self._stuck.setdefault(key, set()).add(state.key)
                        log.error("association %s: instances of group %s not moved to their group (%s); they "
                                  "are kept in %s and join it before it completes", state.key, group, exc,
                                  self.folders.incoming / state.key)
                self._sending[key] -= 1
                if not self._sending[key]:  # a count left at 0 would keep the group pending for ever
                    del self._sending[key]
                if keep:
                    self._due[key] = time.monotonic() + timeout
                elif not (self.folders.gathering / state.called / group).exists():  # another association
                    self._due.pop(key, None)  # still sending it sets it again, at its next store or its release
        if not stuck:
            shutil.rmtree(self.folders.incoming / state.key, ignore_errors=True)
        log.info("association %s: calling=%s host=%s called=%s instances=%d bytes=%d seconds=%.2f groups=%s",
                 "released" if keep else "aborted (its instances are discarded)", state.calling, state.host,
                 state.called, state.instances, state.bytes, time.monotonic() - state.started,
                 ",".join(sorted(state.groups)) or "-")

    # -- groups ---------------------------------------------------------------------------------------
    def _forget(self, called: str, group: str) -> None:
        with self._lock:
            self._seen.pop((called, group), None)
            self._recovered.discard((called, group))

    def pending_groups(self) -> int:
        with self._lock:
            return len(set(self._due) | set(self._sending))

    def tick(self, now: float | None = None) -> None:
        """Complete every group that has been quiet for its timeout."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            ready = [key for key, due in self._due.items() if due <= moment and not self._sending.get(key)]
            for key in ready:
                self._due.pop(key)
                self._sending.pop(key, None)
            stuck = {key: self._stuck.pop(key) for key in ready if key in self._stuck}
        for called, group in ready:
            try:  # a group never completes without an instance that was acknowledged for it
                self.folders.rejoin(called, group, stuck.get((called, group), ()))
                self.complete(called, group)
            except OSError as exc:
                with self._lock:
                    self._due.setdefault((called, group), moment + RETRY_COMPLETION)
                    self._stuck.setdefault((called, group), set()).update(stuck.get((called, group), ()))
                log.error("group %s of %s not completed (%s); it stays gathering, tried again in %.0f s", group,
                          called, exc, RETRY_COMPLETION)

    def complete(self, called: str, group: str) -> None:
        """:raises OSError: a disk error; the group is left gathering (nothing is lost, nothing is sent)."""
        folders = self.folders
        if not (folders.gathering / called / group).is_dir():
            return
        route = self.config.ae_titles.get(called)
        if route is None:
            folders.quarantined(called, group)
            return
        if (self.inbox / called / group).exists():  # the group was complete already: never processed twice
            late, count = folders.late(called, group)
            log.warning("group %s of %s was complete already; %d late instances kept in %s, not processed again",
                        group, called, count, late)
            self._forget(called, group)
            return

        began = time.perf_counter()
        seen = None if (called, group) in self._recovered else self._seen.get((called, group))
        decision = decide(route, folders.gathering / called / group, seen)
        routing_ms = (time.perf_counter() - began) * 1000
        if not decision.runs:
            kept = folders.unrouted(called, group)
            self.counts["unrouted"] += 1
            self._forget(called, group)
            log.warning("group %s of %s matches no rule and %s has no default: kept in %s, no run started "
                        "(routing %.1f ms)", group, called, called, kept, routing_ms)
            return

        def add_triggers(target: Path) -> list[tuple[str, str]]:
            runs = []
            for pipeline, priority in decision.runs:
                runs.append((pipeline, run_id_for(pipeline, called, group, priority)))
                self.triggers.add(pipeline, runs[-1][1], {"clara_payload": str(target), "clara_priority": priority},
                                  priority)
            return runs

        target, count, runs = folders.complete(called, group, add_triggers)
        self.triggers.wake()
        self.counts.update(completed=1, routed=1)
        self._forget(called, group)
        rules = f" rules={','.join(str(i + 1) for i in decision.rules) or 'default'}" if route.rules else ""
        log.info("group complete: called=%s %s=%s instances=%d folder=%s runs=%s%s routing_ms=%.1f", called,
                 route.group_by, group, count, target, ",".join(runs), rules, routing_ms)
