"""Retention (``x-airflow.retention``): what runs and studies leave behind is deleted once old enough, and
nothing else ever is.

- **outputs**: a run's output folder ``<output_root>/<dag_id>/<run>/`` once its run **ended** (success or
  failed, as Airflow says) longer ago than ``retention.outputs``, by the run's end date from Airflow. A
  run still queued or running, whose state or end date cannot be read, or that Airflow no longer knows,
  is never touched; the study ledger (``.clara-studies``) is never deleted.
- **studies**: a batch inbox study whose ledger entry is ``done`` longer ago than ``retention.studies``;
  its ledger keeps a one-line tombstone (``deleted``, with :func:`~clara_airflow.batch.inbox.fingerprint`)
  so that the same study arriving again is not new, while other content under the same name is. Failed,
  waiting, claimed and given-up studies are never deleted.
- **groups** of the DICOM receiver (``<inbox>/<AE>/<UID>/``): once every run its ``.complete`` names ended
  longer ago than the longest ``retention.studies`` of those runs' pipelines; quarantined and unrouted
  groups once they were set aside longer ago than the longest ``retention.studies`` of the AE title's
  pipelines.

Decisions are pure (:func:`plan_outputs`, :func:`plan_studies`, :func:`plan_groups`, given a
``run_end`` reader); :func:`apply` deletes, never following a symbolic link. No Airflow here.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clara_airflow.airflow_compat import ENDED_STATES, GONE, LIVE_STATES
from clara_airflow.backends.layout import RUN_MARKER
from clara_airflow.batch.inbox import fingerprint
from clara_airflow.batch.ledger import DELETED, Ledger
from clara_airflow.settings import PipelineSettings

__all__ = ["Item", "Plan", "apply", "plan_groups", "plan_outputs", "plan_studies"]

RunEnd = Callable[[str, str], "tuple[str, float | None]"]  # (dag_id, run_id) -> (state, end epoch or None)


@dataclass(frozen=True)
class Item:
    path: str
    kind: str  # "outputs", "study" or "group"
    reason: str
    bytes: int = 0


@dataclass
class Plan:
    delete: list[Item] = field(default_factory=list)
    keep: list[Item] = field(default_factory=list)
    tombstones: dict[str, tuple[Ledger, str, str]] = field(default_factory=dict)  # path -> ledger, study, print

    def as_dict(self) -> dict[str, Any]:
        return {"delete": [asdict(i) for i in self.delete], "keep": [asdict(i) for i in self.keep],
                "bytes": sum(i.bytes for i in self.delete)}


def size_of(path: Path) -> int:
    """Bytes of the regular files below ``path``, symbolic links not followed."""
    total = 0
    for here, _, names in os.walk(path):
        for name in names:
            info = os.lstat(os.path.join(here, name))
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _days(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _folders(root: Path, skip: tuple[str, ...] = (".",)) -> Iterable[Path]:
    """The real sub-folders of ``root``: no symbolic links, none whose name starts with ``skip``."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [root / n for n in names if not n.startswith(skip) and stat.S_ISDIR(os.lstat(root / n).st_mode)]


def _by_age(plan: Plan, path: Path, kind: str, age: float, keep: int, what: str) -> None:
    reason = f"{what} {_days(age)} ago (retention {_days(keep)})"
    (plan.delete if age > keep else plan.keep).append(Item(str(path), kind, reason, size_of(path)))


def plan_outputs(plan: Plan, dag_id: str, settings: PipelineSettings, run_end: RunEnd, now: float) -> None:
    keep = settings.retention.outputs
    if keep is None:
        return
    for folder in _folders(Path(settings.payload.output_root) / dag_id):
        try:
            run_id = (folder / RUN_MARKER).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            plan.keep.append(Item(str(folder), "outputs", f"no readable {RUN_MARKER}: not a run folder"))
            continue
        state, ended = run_end(dag_id, run_id)
        if state in LIVE_STATES or state not in ENDED_STATES or state == GONE or ended is None:
            why = {GONE: "Airflow no longer knows the run"}.get(state, f"run {run_id} is {state}" if state in
                                                                  LIVE_STATES else "the run's end date cannot be read")
            plan.keep.append(Item(str(folder), "outputs", why))
            continue
        _by_age(plan, folder, "outputs", now - ended, keep, f"run {run_id} {state}, ended")


def plan_studies(plan: Plan, ledger: Ledger, inbox: str, keep: int | None, now: float) -> None:
    if keep is None:
        return
    for name, entry in ledger.studies().items():
        folder = Path(inbox) / name
        if not os.path.lexists(folder):
            continue
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            plan.keep.append(Item(str(folder), "study", "not a folder (a symbolic link?): never deleted"))
        elif entry.state == DELETED:  # a deletion that stopped half-way, or the same study sent again
            if fingerprint(folder) == entry.detail:
                plan.delete.append(Item(str(folder), "study", f"done by run {entry.run_id} and deleted by retention "
                                        "before; the same files are here again", size_of(folder)))
        elif entry.state != "done":
            plan.keep.append(Item(str(folder), "study", f"study is {entry.state}: only done studies are deleted"))
        else:
            _by_age(plan, folder, "study", now - entry.at, keep, f"done by run {entry.run_id}")
            if plan.delete and plan.delete[-1].path == str(folder):
                plan.tombstones[str(folder)] = (ledger, name, fingerprint(folder))


def plan_groups(plan: Plan, inbox: Path, routes: dict[str, list[str]], keep_of: Callable[[str], int | None],
                run_end: RunEnd, now: float) -> None:
    """``routes``: AE title -> every pipeline it may start; ``keep_of(pipeline)``: its retention.studies."""
    from clara_airflow.dicom.groups import Folders

    folders = Folders(inbox)
    for called in _folders(inbox, (".", "_late")):  # _late: instances after completion, never processed
        for group in _folders(called):
            runs = Folders.runs_of(group)
            if runs is None:
                continue  # not complete: the receiver still owns it
            keeps = [keep_of(dag) for dag, _ in runs]
            if not runs or None in keeps:
                plan.keep.append(Item(str(group), "group", "a pipeline it ran keeps studies forever" if runs else
                                      "its .complete names no run (completed by an older receiver)"))
                continue
            ends = [run_end(dag, run) for dag, run in runs]
            open_ = [f"{run} is {state}" for (_, run), (state, end) in zip(runs, ends, strict=True)
                     if state not in ENDED_STATES or state == GONE or end is None]
            if open_:
                plan.keep.append(Item(str(group), "group", "; ".join(open_)))
                continue
            _by_age(plan, group, "group", now - max(e for _, e in ends if e is not None), max(k for k in keeps if k),
                    f"its {len(runs)} run(s) ended")
    for root, state in ((folders.quarantine, "quarantined"), (folders.unrouted_root, "unrouted")):
        for called in _folders(root):
            keeps = [keep_of(p) for p in routes.get(called.name, [])]
            if not keeps or None in keeps:
                continue
            for group in _folders(called):
                _by_age(plan, group, "group", now - os.lstat(group).st_mtime, max(k for k in keeps if k),
                        f"{state}, set aside")


def apply(plan: Plan, log: Any) -> list[str]:
    """Delete what ``plan`` says (tombstones first, so a crash never loses the ledger's memory); returns
    the problems, each with its path."""
    problems = []
    for item in plan.delete:
        path = Path(item.path)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise OSError("not a folder any more")
            if item.path in plan.tombstones:
                ledger, study, printed = plan.tombstones[item.path]
                if not ledger.tombstone(study, printed):
                    raise OSError("its ledger entry changed since the plan")
            shutil.rmtree(path)
            log.info("retention: deleted %s (%s, %d bytes): %s", path, item.kind, item.bytes, item.reason)
        except OSError as exc:
            problems.append(f"{path}: {exc}")
            log.warning("retention: %s not deleted: %s", path, exc)
    return problems


def now() -> float:
    return time.time()
