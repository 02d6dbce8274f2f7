"""The receiver's folders on disk, and the steps that move a group through them.

``<inbox>/.clara-receiver/``:

- ``incoming/<association>/<called AE>/<group UID>/``: instances of an association still open. Each was
  acknowledged, so none is ever deleted: at a start, what a killed receiver left here joins its group, and
  what a release could not move (a disk error) joins it before it completes.
- ``groups/<called AE>/<group UID>/``: groups still gathering.
- ``quarantine/<called AE>/<group UID>[-n]/``: groups of an AE title that is no longer configured; kept,
  listed by ``clara-airflow dicom status``, never routed.
- ``pending/``, ``failed-triggers/``: the triggers (:mod:`clara_airflow.dicom.trigger`).
- ``tmp/``: instances being received (never acknowledged yet; emptied at a start).

A group completes in three durable steps, each of which a crash or a full disk may interrupt: its
triggers are written to ``pending/``, then its ``.complete`` marker, then the folder is renamed into
``<inbox>/<called AE>/<group UID>/``. A trigger is sent only once its group's ``.complete`` is in the
inbox, and an interrupted completion is done again (the same trigger files, the same run ids), so each
ends, after a restart, with exactly one run per group and pipeline.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from clara_airflow.durable import fsync_folder, write_file

log = logging.getLogger("clara_airflow.dicom")

__all__ = ["Folders", "adopt", "unique"]


def unique(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ``folder-3``, ... : the first that does not exist."""
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def instances(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix == ".dcm" and not p.name.startswith(".")]


def adopt(handle: int, received: Path, target: Path) -> None:
    """Make pynetdicom's file of a received instance (open as ``handle``) ``target``, durably: fsync,
    rename (a copy when the two are on different filesystems), fsync the folder."""
    os.fsync(handle)
    try:
        os.replace(received, target)
    except OSError:
        with open(received, "rb") as source:
            write_file(target, lambda out: shutil.copyfileobj(source, out, 2**20), mode=0o640)
    fsync_folder(target.parent)


class Folders:
    """The receiver's folders under ``inbox``."""

    def __init__(self, inbox: str | Path) -> None:
        self.inbox = Path(inbox)
        self.work = self.inbox / ".clara-receiver"
        self.incoming, self.gathering = self.work / "incoming", self.work / "groups"
        self.quarantine, self.tmp, self.spool = self.work / "quarantine", self.work / "tmp", self.work / "pending"
        self.unrouted_root = self.work / "unrouted"  # groups no rule matched (and no default caught)

    def merge(self, source: Path, target: Path) -> int:
        """Move every instance of ``source`` into ``target`` (created); returns how many. A name already in
        ``target`` (the same SOP instance sent twice) is replaced: the newer copy wins, as in a PACS."""
        target.mkdir(parents=True, exist_ok=True)
        moved = 0
        for item in instances(source):
            os.replace(item, target / item.name)
            moved += 1
        fsync_folder(target)
        return moved

    def rejoin(self, called: str, group: str, associations: Iterable[str]) -> None:
        """Instances that a release could not move into their group (a disk error) join it now, before it
        completes; an association's folder goes once no instance is left in it.

        :raises OSError: the move still fails; the instances stay where they are, and nothing is lost.
        """
        for association in sorted(associations):
            source = self.incoming / association / called / group
            if source.is_dir():
                self.merge(source, self.gathering / called / group)
            if not any(p.is_file() for p in (self.incoming / association).rglob("*")):
                shutil.rmtree(self.incoming / association, ignore_errors=True)

    def recover(self, routed: Iterable[str]) -> list[tuple[str, str]]:
        """At a start: instances that a previous process acknowledged in associations it never closed join
        their groups; groups of AE titles no longer in ``routed`` go to quarantine. Returns the groups that
        are gathering (to complete once quiet)."""
        shutil.rmtree(self.tmp, ignore_errors=True)  # half-received instances: never acknowledged
        for folder in (self.incoming, self.gathering, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        for association in sorted(self.incoming.iterdir()):
            kept = 0
            for called in association.iterdir() if association.is_dir() else ():
                for group in called.iterdir() if called.is_dir() else ():
                    if group.is_dir():
                        kept += self.merge(group, self.gathering / called.name / group.name)
            if kept:
                log.warning("association %s was still open when the receiver stopped; its %d acknowledged "
                            "instances are kept and join their groups", association.name, kept)
            shutil.rmtree(association, ignore_errors=True)
        return self.gathering_groups(set(routed))

    def gathering_groups(self, routed: set[str]) -> list[tuple[str, str]]:
        found = []
        for called in sorted(p for p in self.gathering.iterdir() if p.is_dir()):
            for group in sorted(p for p in called.iterdir() if p.is_dir()):
                if called.name in routed:
                    found.append((called.name, group.name))
                else:
                    self.quarantined(called.name, group.name)
        return found

    def quarantined(self, called: str, group: str) -> Path:
        """Move a group of an AE title that no longer routes aside; logged once (here)."""
        target = unique(self.quarantine / called / group)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.gathering / called / group, target)
        log.error("group %s was sent to %s, which is no longer in ae_titles; it is kept in %s and starts no run. "
                  "Route %s again and move the folder back to %s, or delete it", group, called, target, called,
                  self.gathering / called)
        return target

    def unrouted(self, called: str, group: str) -> Path:
        """Keep a group that starts no run apart (``dicom status`` lists it; retention deletes it in time)."""
        target = unique(self.unrouted_root / called / group)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.gathering / called / group, target)
        fsync_folder(target.parent)
        return target

    def complete(self, called: str, group: str, add_triggers: Callable[[Path], list[tuple[str, str]]]
                 ) -> tuple[Path, int, list[str]]:
        """Complete a quiet group: its triggers (``add_triggers(target)`` writes them and returns their
        (DAG id, run id) pairs), its ``.complete`` (which names the runs, for retention), then the rename
        into the inbox. Returns (inbox folder, instances, run ids).

        :raises OSError: a step failed; the group is still gathering and a later try does it again.
        """
        source = self.gathering / called / group
        files = instances(source)
        target = self.inbox / called / group
        runs = add_triggers(target)
        write_file(source / ".complete", f"{len(files)} instances\n" + "".join(f"run {d} {r}\n" for d, r in runs))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        fsync_folder(target.parent)
        return target, len(files), [r for _, r in runs]

    @staticmethod
    def runs_of(folder: Path) -> list[tuple[str, str]] | None:
        """The (DAG id, run id) pairs a complete group started, from its ``.complete``; None if unreadable."""
        try:
            lines = (folder / ".complete").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        return [(parts[1], parts[2]) for line in lines if len(parts := line.split()) == 3 and parts[0] == "run"]

    def late(self, called: str, group: str) -> tuple[Path, int]:
        """Instances that arrived for a group already complete: kept apart, never processed twice."""
        source = self.gathering / called / group
        count = len(instances(source))
        late = unique(self.inbox / "_late" / called / group / time.strftime("%Y%m%dT%H%M%S"))
        late.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, late)
        return late, count
