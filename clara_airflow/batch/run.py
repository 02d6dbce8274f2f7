"""What one batch run decides, as plain functions (no Airflow): which studies it takes, how a study's
branch ended, and the run's summary.

A run's studies are claimed in the ledger before any service starts; a study a run cannot take (done,
given up, held by a live run, over ``max_studies``) is counted as skipped and left for later.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara_airflow.batch.inbox import safe_study_name, scan_inbox
from clara_airflow.batch.ledger import Ledger
from clara_airflow.settings import BatchSettings

__all__ = ["LEDGER_FOLDER", "SUMMARY_FILE", "Selection", "ledger_for", "select_studies", "study_outcome",
           "summarise", "write_summary"]

LEDGER_FOLDER = ".clara-studies"
SUMMARY_FILE = "batch-summary.json"


def ledger_for(output_root: str, dag_id: str, retries: int) -> Ledger:
    """The ledger of one pipeline, next to its run folders; ``retries + 1`` runs may try a study."""
    return Ledger(Path(output_root) / dag_id / LEDGER_FOLDER, max_attempts=retries + 1)


@dataclass(frozen=True)
class Selection:
    """:param studies: what this run processes, ``{"study", "folder"}`` each, sorted by name.
    :param skipped: complete studies left alone, by name, with the reason. :param waiting: incomplete ones."""

    studies: list[dict[str, str]]
    skipped: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)


def select_studies(batch: BatchSettings, ledger: Ledger, run_id: str, run_state: Callable[[str], str], *,
                   warn: Callable[[str], None] | None = None, now: float | None = None) -> Selection:
    """Claim up to ``max_studies`` complete studies of the inbox for ``run_id``.

    :raises ClaraAirflowError: the inbox is missing or unreadable (nothing is claimed then).
    """
    if batch.inbox is None:
        raise ValueError("select_studies needs a batch inbox")
    complete, waiting = scan_inbox(batch.inbox, batch.quiet_seconds, now=now, warn=warn)
    taken: list[dict[str, str]] = []
    skipped: dict[str, str] = {}
    for study in complete:
        if len(taken) >= batch.max_studies:
            skipped[study.name] = f"over max_studies ({batch.max_studies}): left for the next run"
        elif ledger.claim(study.name, run_id, run_state):
            taken.append({"study": study.name, "folder": study.folder})
        else:
            _, entry = ledger.current(study.name)
            state = entry.state if entry is not None else "unknown"
            skipped[study.name] = f"claimed by run {entry.run_id}" if entry and state == "claimed" else state
    return Selection(taken, skipped, waiting)


def study_outcome(states: Mapping[str, Any], expected: int) -> bool:
    """A study succeeded when every one of its ``expected`` step tasks did."""
    return len(states) == expected and all(str(s) == "success" for s in states.values())


def summarise(records: Iterable[Mapping[str, Any] | None], skipped: Mapping[str, str]) -> dict[str, Any]:
    """The ``batch-summary.json`` content: one entry per study of the run, and the counts."""
    studies = sorted((dict(r) for r in records if r), key=lambda r: str(r["study"]))
    return {
        "studies": studies,
        "succeeded": sum(1 for r in studies if r["state"] == "success"),
        "failed": sum(1 for r in studies if r["state"] != "success"),
        "skipped": len(skipped),
        "skipped_studies": dict(sorted(skipped.items())),
    }


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary atomically (a reader never sees half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=run_dir, prefix=".summary-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=2, sort_keys=True)
    target = run_dir / SUMMARY_FILE
    os.replace(temp, target)
    return target


def study_states(batch: BatchSettings, output_root: str, dag_id: str, retries: int) -> list[dict[str, Any]]:
    """Every study of the inbox and of the ledger with its state: ``arriving`` (incomplete), ``waiting``
    (complete, not yet taken), ``claimed``, ``done``, ``failed`` (offered again), ``given-up``, ``offered``."""
    ledger = ledger_for(output_root, dag_id, retries)
    known = ledger.studies()
    rows: dict[str, dict[str, Any]] = {}
    complete, arriving = scan_inbox(batch.inbox, batch.quiet_seconds) if batch.inbox else ([], [])
    for name in arriving:
        rows[name] = {"study": name, "state": "arriving", "detail": "incomplete: no .complete file and changed "
                      f"in the last {batch.quiet_seconds} s"}
    for study in complete:
        rows[study.name] = {"study": study.name, "state": "waiting", "detail": "complete; the next run takes it"}
    for name, entry in known.items():
        detail = {"claimed": f"claimed by run {entry.run_id}", "done": f"done in run {entry.run_id} "
                  f"({entry.seconds:.1f} s) -> {entry.output}",
                  "failed": f"failed {entry.failures} time(s), last in run {entry.run_id}; the next run tries again",
                  "given-up": f"given up after {entry.failures} failed run(s), last {entry.run_id}; "
                  "clara-airflow studies PIPELINE --retry STUDY offers it again",
                  "offered": "offered again; the next run takes it"}.get(entry.state, entry.state)
        rows[name] = {"study": name, "state": entry.state, "detail": detail, "run_id": entry.run_id,
                      "failures": entry.failures, "seconds": entry.seconds, "output": entry.output}
    return [rows[name] for name in sorted(rows)]


def study_folder(run_dir: Path, study: str) -> Path:
    """``<run folder>/<study>``: the study's own part of the run's outputs."""
    problem = safe_study_name(study)
    if problem is not None or study.startswith((".", "_")):
        raise ValueError(f"study name {study!r} cannot be a folder: {problem or 'it is hidden'}")
    return run_dir / study
