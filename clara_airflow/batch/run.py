"""What one batch run decides, as plain functions (no Airflow): which studies it takes, how a study's
branch ended, and the run's summary.

A run's studies are claimed in the ledger before any service starts; a study a run cannot take (done,
given up, held by a live run, over ``max_studies``) is counted as skipped and left for later. A study
counts a failure only when one of its own steps failed: when its steps did not run (the run's services
could not be ensured, or the run died first) it goes back to ``waiting`` with its attempts unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from clara_airflow.airflow_compat import ENDED_STATES, plain_state
from clara_airflow.batch.inbox import SUMMARY_FILE, fingerprint, safe_study_name, scan_inbox
from clara_airflow.batch.ledger import CORRUPT, DELETED, Ledger
from clara_airflow.durable import write_file
from clara_airflow.settings import BatchSettings

__all__ = ["LEDGER_FOLDER", "SUMMARY_FILE", "Selection", "branch_study", "ledger_for", "select_studies",
           "study_outcome", "summarise", "write_summary"]

LEDGER_FOLDER = ".clara-studies"
SUCCESS, FAILED, NOT_RUN = "success", "failed", "not-run"


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
                   warn: Callable[[str], None] | None = None, now: float | None = None,
                   limit: int | None = None) -> Selection:
    """Claim up to ``max_studies`` complete studies of the inbox for ``run_id`` (fewer with ``limit``: the
    number of branches Airflow will map, ``[core] max_map_length``).

    :raises ClaraAirflowError: the inbox is missing or unreadable, or the ledger cannot be written (a
        claim already made is then released, so nothing stays held by a run that took nothing).
    """
    if batch.inbox is None:
        raise ValueError("select_studies needs a batch inbox")
    most = batch.max_studies if limit is None else max(0, min(batch.max_studies, limit))
    complete, waiting = scan_inbox(batch.inbox, batch.quiet_seconds, now=now, warn=warn)
    taken: list[dict[str, str]] = []
    skipped: dict[str, str] = {}
    try:
        for study in complete:
            if len(taken) >= most:
                why = f"max_studies ({batch.max_studies})" if most == batch.max_studies else \
                    f"the {most} branches Airflow maps per run ([core] max_map_length)"
                skipped[study.name] = f"over {why}: left for the next run"
            elif ledger.claim(study.name, run_id, run_state, fingerprint=partial(fingerprint, study.folder)):
                taken.append({"study": study.name, "folder": study.folder})
            else:
                _, entry = ledger.current(study.name)
                state = entry.state if entry is not None else "unknown"
                skipped[study.name] = (f"claimed by run {entry.run_id}" if entry and state == "claimed" else
                                       f"done by run {entry.run_id}, deleted by retention; the same files arrived "
                                       "again (studies --retry offers it again)" if entry and state == DELETED else
                                       f"corrupt ledger entry {entry.output} ({entry.detail})" if entry and
                                       state == CORRUPT else state)
    except Exception:
        for chosen in taken:
            ledger.release(chosen["study"], run_id, "its run could not finish choosing its studies")
        raise
    return Selection(taken, skipped, waiting)


def study_outcome(states: Mapping[str, Any], expected: int) -> str:
    """How a study's branch ended, from the states of its ``expected`` step tasks (Airflow's values or
    enums): ``success`` when every one succeeded, ``failed`` when one of them failed itself, and
    ``not-run`` otherwise: its steps did not run because something outside the study failed (a
    service's ensure task) or the run stopped first. Only ``failed`` counts against the study."""
    found = [plain_state(state) for state in states.values()]
    if len(found) == expected and all(state == SUCCESS for state in found):
        return SUCCESS
    return FAILED if FAILED in found else NOT_RUN


def summarise(records: Iterable[Mapping[str, Any] | None], skipped: Mapping[str, str]) -> dict[str, Any]:
    """The ``batch-summary.json`` content: one entry per study of the run, and the counts (``waiting``:
    studies given back untouched, for the next run)."""
    studies = sorted((dict(r) for r in records if r), key=lambda r: str(r["study"]))
    return {
        "studies": studies,
        "succeeded": sum(1 for r in studies if r["state"] == SUCCESS),
        "failed": sum(1 for r in studies if r["state"] not in (SUCCESS, "waiting")),
        "waiting": sum(1 for r in studies if r["state"] == "waiting"),
        "skipped": len(skipped),
        "skipped_studies": dict(sorted(skipped.items())),
    }


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary durably (a reader never sees half a file). No study is named like it
    (:func:`clara_airflow.batch.inbox.safe_study_name`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_file(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))


def branch_study(study: Any, context: Any) -> dict[str, str]:
    """A branch's ``{"study", "folder"}`` (its mapped-task-group argument), or ``{}`` outside batch mode;
    sets ``context["clara_study"]``, the label the grid shows the branch by."""
    value = study.resolve(context) if hasattr(study, "resolve") else study
    found = dict(value) if isinstance(value, dict) else {}
    if found:
        context["clara_study"] = found.get("study") or os.path.basename(found.get("folder", "")) or "payload"
    return found


def study_states(batch: BatchSettings, output_root: str, dag_id: str, retries: int,
                 run_state: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Every study of the inbox and of the ledger with its state: ``arriving`` (incomplete), ``waiting``
    (complete, not yet taken, or given back by its run), ``claimed``, ``done``, ``failed`` (offered
    again), ``given-up``, ``offered``, ``corrupt`` (its ledger entry cannot be read; the path is shown).

    :param run_state: the state of a run of this pipeline by run id: a claim by a run that has ended
        shows as ``waiting`` (the next run takes it over).
    """
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
        state = entry.state
        detail = {"claimed": f"claimed by run {entry.run_id}", "done": f"done in run {entry.run_id} "
                  f"({entry.seconds:.1f} s) -> {entry.output}",
                  "failed": f"failed {entry.failures} time(s), last in run {entry.run_id}; the next run tries again",
                  "given-up": f"given up after {entry.failures} failed run(s), last {entry.run_id}; "
                  "clara-airflow studies PIPELINE --retry STUDY offers it again",
                  "offered": "offered again; the next run takes it",
                  "waiting": f"given back by run {entry.run_id} ({entry.detail}); the next run takes it",
                  CORRUPT: f"its ledger entry {entry.output} cannot be read ({entry.detail}); look at it, then "
                  "clara-airflow studies PIPELINE --retry STUDY offers the study again"}.get(state, state)
        if state == "claimed" and run_state is not None:
            ended = run_state(entry.run_id)
            if ended in ENDED_STATES:
                state, detail = "waiting", (f"claimed by run {entry.run_id}, which ended ({ended}) before it "
                                            "recorded the study; the next run takes it")
        rows[name] = {"study": name, "state": state, "detail": detail, "run_id": entry.run_id,
                      "failures": entry.failures, "seconds": entry.seconds, "output": entry.output}
    return [rows[name] for name in sorted(rows)]


def study_folder(run_dir: Path, study: str) -> Path:
    """``<run folder>/<study>``: the study's own part of the run's outputs."""
    problem = safe_study_name(study)
    if problem is not None or study.startswith((".", "_")):
        raise ValueError(f"study name {study!r} cannot be a folder: {problem or 'it is hidden'}")
    return run_dir / study
