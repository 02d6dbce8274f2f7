"""What a batch pipeline did with each study: exactly once, with no lock server and no Variable per study.

Each study has a folder in the ledger (``<output_root>/<dag_id>/.clara-studies/<study>/``) holding
numbered entries ``1.json``, ``2.json``, ...; the highest is the study's state. A new entry is written
in full to a temp file and then hard-linked to the next number, which fails when that number exists:
the link is the compare-and-set, so of two runs that race for a study exactly one gets it, on a local
disk or NFS alike, and no reader ever sees half an entry. The ledger survives every restart (it is
files next to the outputs), scales to 100,000 studies (parsing never reads it), and keeps the history.

States: ``claimed`` (by a run), ``done`` (by its one successful run), ``failed`` (offered again, up to
``max_attempts`` runs in all), ``given-up``, ``offered`` (a given-up study offered again by
``clara-airflow studies PIPELINE --retry STUDY``) and ``waiting`` (released by its run untouched: the
run's services could not be ensured, or its branch never ran; the attempt count is unchanged). A claim
whose run is neither queued nor running any more (the run died, or was deleted) is taken over by the
next run. An entry that cannot be read is reported as ``corrupt`` with its path and blocks only its
own study.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from clara_airflow.airflow_compat import LIVE_STATES
from clara_airflow.batch.inbox import safe_study_name
from clara_airflow.durable import create_file
from clara_airflow.errors import ClaraAirflowError

__all__ = ["CORRUPT", "DELETED", "LIVE_STATES", "Entry", "Ledger"]

CORRUPT = "corrupt"
DELETED = "deleted"  # done, then deleted by retention; ``detail`` holds what the study held (inbox.fingerprint)


@dataclass(frozen=True)
class Entry:
    """One step of a study's history. :param failures: failed runs so far."""

    state: str
    run_id: str = ""
    failures: int = 0
    seconds: float = 0.0
    output: str = ""
    at: float = 0.0
    detail: str = ""


class Ledger:
    """The studies of one pipeline. :param root: ``<output_root>/<dag_id>/.clara-studies``."""

    def __init__(self, root: str | Path, max_attempts: int = 1) -> None:
        self.root = Path(root)
        self.max_attempts = max(1, max_attempts)

    # -- reading --------------------------------------------------------------------------------------
    def current(self, study: str) -> tuple[int, Entry | None]:
        """(version, entry) of the study's latest entry; (0, None) for a study never seen."""
        folder = self._folder(study)
        try:
            versions = [int(n[:-5]) for n in os.listdir(folder) if n.endswith(".json") and n[:-5].isdigit()]
        except FileNotFoundError:
            return 0, None
        except OSError as exc:  # the root is a file, an unreadable folder, a stale NFS handle
            raise _unreadable(folder, exc) from None
        if not versions:
            return 0, None
        version = max(versions)
        path = folder / f"{version}.json"
        try:
            data = json.loads(path.read_bytes())
            entry = Entry(**{k: v for k, v in data.items() if k in Entry.__dataclass_fields__})
            if not isinstance(entry.state, str) or not isinstance(entry.failures, int):
                raise TypeError("state or failures of the wrong type")
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            return version, Entry(CORRUPT, output=str(path), detail=f"{type(exc).__name__}: {exc}")
        return version, entry

    def studies(self) -> dict[str, Entry]:
        """Every study the ledger knows, by name."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _unreadable(self.root, exc) from None
        found = {}
        for name in names:
            _, entry = self.current(name)
            if entry is not None:
                found[name] = entry
        return found

    # -- the protocol ---------------------------------------------------------------------------------
    def claim(self, study: str, run_id: str, run_state: Callable[[str], str],
              fingerprint: Callable[[], str] | None = None) -> bool:
        """Take ``study`` for ``run_id``; False when it is done, given up, or held by a live run, or when
        retention deleted it after it was done and the same content (``fingerprint()``) arrived again."""
        version, entry = self.current(study)
        if entry is not None and entry.state == DELETED:
            if fingerprint is None or fingerprint() == entry.detail:
                return False
            entry = None  # the same name with other content: a new study
        if entry is not None:
            if entry.state in ("done", "given-up", CORRUPT):
                return False
            if entry.state == "claimed":
                if entry.run_id == run_id:
                    return True  # this run's select task is retried: same studies again
                if run_state(entry.run_id) in LIVE_STATES:
                    return False
        failures = entry.failures if entry is not None else 0
        return self._write(study, version + 1, Entry("claimed", run_id, failures, at=time.time()))

    def finish(self, study: str, run_id: str, *, ok: bool, seconds: float, output: str) -> Entry | None:
        """Record the outcome of this run's branch of ``study``; None when the run no longer holds it.
        A branch cleared in the UI and run again records again, as long as no other run took the study."""
        version, entry = self.current(study)
        if entry is None or entry.run_id != run_id or entry.state not in ("claimed", "failed", "given-up"):
            return None
        # "failed"/"given-up" by this same run: its branch was cleared and ran again; that run counts once
        failures = entry.failures - (entry.state != "claimed") + (0 if ok else 1)
        state = "done" if ok else ("given-up" if failures >= self.max_attempts else "failed")
        new = Entry(state, run_id, failures, round(seconds, 3), output, time.time())
        return new if self._write(study, version + 1, new) else None

    def release(self, study: str, run_id: str, reason: str) -> Entry | None:
        """This run gives ``study`` back untouched (``waiting``, attempts unchanged): none of its own steps
        failed, but they did not run (the run's services could not be ensured, or its branch never
        started). None when the run no longer holds it."""
        version, entry = self.current(study)
        if entry is None or entry.run_id != run_id or entry.state != "claimed":
            return None
        new = Entry("waiting", run_id, entry.failures, at=time.time(), detail=reason)
        return new if self._write(study, version + 1, new) else None

    def tombstone(self, study: str, fingerprint: str) -> bool:
        """Retention deleted the done study's folder: a one-line entry remembers what it held."""
        version, entry = self.current(study)
        if entry is None or entry.state != "done":
            return False
        return self._write(study, version + 1, Entry(DELETED, entry.run_id, entry.failures, entry.seconds,
                                                     entry.output, time.time(), fingerprint))

    def offer_again(self, study: str) -> Entry:
        """A given-up, failed or corrupt study (or one retention deleted) is offered to the next run with a
        fresh count of attempts."""
        version, entry = self.current(study)
        if entry is None or entry.state not in ("given-up", "failed", CORRUPT, DELETED):
            state = "unknown" if entry is None else entry.state
            raise ValueError(f"study {study!r} is {state}; only a failed, given-up or corrupt study can be offered "
                             "again")
        new = Entry("offered", at=time.time())
        if not self._write(study, version + 1, new):
            raise ValueError(f"study {study!r} changed while it was offered again; look at it and retry")
        return new

    # -- storage --------------------------------------------------------------------------------------
    def _folder(self, study: str) -> Path:
        problem = safe_study_name(study)
        if problem is not None:
            raise ValueError(f"study name {study!r} cannot be used: {problem}")
        return self.root / study

    def _write(self, study: str, version: int, entry: Entry) -> bool:
        """Write ``version`` of the study's entry durably; False when another process wrote it first.

        :raises ClaraAirflowError: any other failure of the link (a filesystem without hard links,
            permissions, a full disk), with the path: never read as "another run won".
        """
        folder = self._folder(study)
        target = folder / f"{version}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return create_file(target, json.dumps(asdict(entry), sort_keys=True), mode=0o640)
        except OSError as exc:
            raise ClaraAirflowError(
                f"the study ledger cannot write {target}: {exc.strerror or exc} (errno {exc.errno}); the ledger "
                "needs a writable local or NFS folder with hard links (x-airflow payload.output_root)") from None


def _unreadable(folder: Path, exc: OSError) -> ClaraAirflowError:
    return ClaraAirflowError(f"the study ledger cannot read {folder}: {exc.strerror or exc} (errno {exc.errno}); "
                             "the ledger needs a readable and writable local or NFS folder "
                             "(x-airflow payload.output_root)")
