"""Starting DAG runs for received studies through Airflow's public REST API, with pending triggers kept
on disk until Airflow has them.

A trigger is a file ``<spool>/<digest>.json`` written (durably) before the group it starts a run for
becomes visible in the inbox, and removed once Airflow answered 200 (created) or 409 (a run with that id
exists already: an earlier attempt got through). The run id is deterministic (pipeline, called AE title,
group UID), so a receiver that crashes, or an Airflow that is down, never loses a run and never starts
one twice. Triggers are sent by their own thread (:meth:`Triggers.run`): receiving, C-ECHO and group completion
never wait on Airflow. Any failure of a send (no connection, a timeout, 5xx, a 401 after a fresh token,
a body that is not what Airflow answers) is retried per trigger with exponential back-off from 1 s,
capped at 60 s. Airflow's permanent answers (400, 403, 404, 422) move the trigger to
``failed-triggers/`` with the status and Airflow's message; ``clara-airflow dicom retry`` moves it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import AirflowApi
from clara_airflow.durable import write_file

log = logging.getLogger("clara_airflow.dicom")

__all__ = ["AirflowClient", "Triggers", "records", "run_id_for"]

_ORDER = {"immediate": 0, "higher": 1, "normal": 2, "lower": 3}
FIRST_DELAY, MAX_BACKOFF = 1.0, 60.0
PERMANENT = (400, 403, 404, 422)
RESCAN = 5.0  # seconds between looks at the spool folder for triggers another process put back (dicom retry)
_RUN_ID_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def run_id_for(pipeline: str, called: str, group_uid: str, priority: str = "normal") -> str:
    """``dicom-<priority>__<pipeline>__<called AE>__<group UID>``: the same group for the same pipeline
    always gets the same run id; the same study sent to two AE titles that route to one pipeline gets two
    (one per inbox folder). A digest stands for an over-long pipeline name and for an AE title with
    characters a run id may not hold. The priority is where Airflow's scheduler can read it
    (:mod:`clara_airflow.priority`)."""
    name = pipeline if len(pipeline) <= 150 else hashlib.sha256(pipeline.encode()).hexdigest()[:16]
    title = called if _RUN_ID_SAFE.fullmatch(called) else "ae-" + hashlib.sha256(called.encode()).hexdigest()[:8]
    return f"dicom-{priority}__{name}__{title}__{group_uid}"


class AirflowClient:
    """``POST /api/v2/dags/{dag_id}/dagRuns`` with a JWT from ``/auth/token`` (refreshed on 401)."""

    def __init__(self, api: AirflowApi, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout
        self._token: str | None = None

    def _credentials(self) -> dict[str, str]:
        user, password = os.environ.get(self.api.username_env), os.environ.get(self.api.password_env)
        if not user or not password:
            raise PermissionError(f"set {self.api.username_env} and {self.api.password_env} to an Airflow user "
                                  "that may trigger the routed DAGs")
        return {"username": user, "password": password}

    def _call(self, method: str, path: str, body: dict[str, Any] | None, token: str | None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def token(self, fresh: bool = False) -> str:
        if self._token is None or fresh:
            status, text = self._call("POST", "/auth/token", self._credentials(), None)
            if status not in (200, 201):
                raise PermissionError(f"Airflow refused the receiver's login at {self.api.url}/auth/token "
                                      f"(HTTP {status}): {text[:200]}")
            try:
                token = json.loads(text)["access_token"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{self.api.url}/auth/token answered HTTP {status} without an access_token: "
                                 f"{text[:200]!r}") from None
            if not isinstance(token, str) or not token:
                raise ValueError(f"{self.api.url}/auth/token answered an access_token that is not a string")
            self._token = token
        return self._token

    def _authorized(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, str]:
        status, text = self._call(method, path, body, self.token())
        if status == 401:
            status, text = self._call(method, path, body, self.token(fresh=True))
        return status, text

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> tuple[int, str]:
        """(HTTP status, body) of one trigger; 200 created, 409 exists already."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return self._authorized("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns", body)

    def dag_state(self, dag_id: str) -> str:
        """``active``, ``paused`` or ``missing`` (Airflow does not know the DAG); ``unknown: <why>`` when
        Airflow cannot be asked."""
        try:
            status, text = self._authorized("GET", f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}", None)
            if status == 404:
                return "missing"
            if status != 200:
                return f"unknown: HTTP {status}: {text[:200]}"
            return "paused" if json.loads(text).get("is_paused") else "active"
        except Exception as exc:
            return f"unknown: {type(exc).__name__}: {exc}"


@dataclass
class _State:
    path: Path
    record: dict[str, Any] = field(default_factory=dict)
    due: float = 0.0
    delay: float = FIRST_DELAY


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"dag_id", "run_id", "conf"} <= record.keys() else None


def records(folder: Path) -> list[dict[str, Any]]:
    """The trigger records in ``folder``, most urgent first (priority, then age); each with its ``_path``."""
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        record = _read(path)
        if record is not None:
            found.append({**record, "_path": path})
    return sorted(found, key=lambda r: (_ORDER.get(r.get("priority", "normal"), 2), r.get("queued", 0)))


class Triggers:
    """The on-disk queue of DAG runs to start, tried in priority order with per-trigger back-off.
    :param spool: the folder of pending triggers (kept across restarts); ``failed-triggers/`` beside it."""

    def __init__(self, spool: Path, client: AirflowClient, *, clock: Any = time.monotonic) -> None:
        self.spool = spool
        self.failed = spool.parent / "failed-triggers"
        self.client = client
        self.clock = clock
        self._known: dict[str, _State] = {}
        self.counts: Counter[str] = Counter()  # for /metrics: sent, failed, retried
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._scanned: float | None = None
        spool.mkdir(parents=True, exist_ok=True)

    def add(self, pipeline: str, run_id: str, conf: dict[str, Any], priority: str) -> None:
        """Keep the trigger on disk (durably: :raises OSError: when it cannot be); the sender sends it once its
        group is in the inbox (:meth:`wake` says so)."""
        record = {"dag_id": pipeline, "run_id": run_id, "conf": conf, "priority": priority, "queued": time.time(),
                  "attempts": 0, "last_error": ""}
        path = self.spool / f"{_file_name(pipeline, run_id)}.json"
        write_file(path, json.dumps(record), mode=0o600)
        with self._lock:
            self._known[path.name] = _State(path, record)

    def pending(self) -> list[dict[str, Any]]:
        """Every pending trigger on disk, most urgent first."""
        return records(self.spool)

    def _rescan(self, moment: float) -> None:
        """Pick up triggers put back by another process (only new names are read) and forget those that
        are gone."""
        names = {path.name: path for path in self.spool.glob("*.json")}
        with self._lock:
            for name in [n for n in self._known if n not in names]:
                del self._known[name]
            new = [path for name, path in names.items() if name not in self._known]
        for path in new:
            record = _read(path)
            if record is not None:
                with self._lock:
                    self._known.setdefault(path.name, _State(path, record))
        self._scanned = moment

    def flush(self, now: float | None = None) -> int:
        """Send every due trigger whose group is in the inbox; returns how many Airflow now has. Never raises
        for a trigger: what went wrong is kept in the trigger (``attempts``, ``last_error``) and logged."""
        moment = float(self.clock()) if now is None else now
        if self._scanned is None or moment - self._scanned >= RESCAN:
            self._rescan(moment)
        with self._lock:
            due = sorted((s for s in self._known.values() if s.due <= moment),
                         key=lambda s: (_ORDER.get(s.record.get("priority", "normal"), 2), s.record.get("queued", 0)))
        return sum(self._send(state, moment) for state in due)

    def _send(self, state: _State, moment: float) -> int:
        record = state.record
        payload = str(record["conf"].get("clara_payload") or "")
        if payload and not os.path.isfile(os.path.join(payload, ".complete")):
            state.due = moment + FIRST_DELAY  # its group is still being moved into the inbox (or a restart will)
            return 0
        try:
            status, text = self.client.trigger(record["dag_id"], record["run_id"], record["conf"])
        except Exception as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
        if status in (200, 201, 409):
            log.info("run started: dag_id=%s run_id=%s priority=%s http=%d%s", record["dag_id"], record["run_id"],
                     record.get("priority"), status, " (it existed already)" if status == 409 else "")
            self._forget(state)
            self.counts["sent"] += 1
            return 1
        if status in PERMANENT:
            self._fail(state, f"HTTP {status}: {_detail(text)}")
            self.counts["failed"] += 1
            return 0
        self.counts["retried"] += 1
        record["attempts"] = int(record.get("attempts", 0)) + 1
        record["last_error"] = f"HTTP {status}: {_detail(text)}" if status else text[:300]
        state.due, state.delay = moment + state.delay, min(MAX_BACKOFF, state.delay * 2)
        log.warning("cannot start %s of %s yet (%s); try %d, retrying in %.0f s; the trigger is kept in %s",
                    record["run_id"], record["dag_id"], record["last_error"], record["attempts"], state.due - moment,
                    state.path)
        try:
            write_file(state.path, json.dumps(record), mode=0o600)  # attempts and last error, for dicom status
        except OSError as exc:
            log.warning("cannot record the attempt in %s: %s", state.path, exc)
        return 0

    def _forget(self, state: _State) -> None:
        try:
            state.path.unlink(missing_ok=True)
        except OSError as exc:  # a 409 settles it at the next try
            log.warning("cannot remove the sent trigger %s: %s", state.path, exc)
        with self._lock:
            self._known.pop(state.path.name, None)

    def _fail(self, state: _State, reason: str) -> None:
        record = {**state.record, "reason": reason}
        try:
            self.failed.mkdir(parents=True, exist_ok=True)
            write_file(self.failed / state.path.name, json.dumps(record), mode=0o600)
        except OSError as exc:
            state.due = self.clock() + MAX_BACKOFF
            log.error("cannot move the refused trigger %s to %s: %s", state.path, self.failed, exc)
            return
        self._forget(state)
        log.error("Airflow refused the run %s of %s for good (%s); the trigger is kept in %s: fix the cause, then "
                  "`clara-airflow dicom retry --config <dicom.yaml> %s`", record["run_id"], record["dag_id"], reason,
                  self.failed, record["run_id"])

    def next_wait(self, limit: float = RESCAN) -> float:
        """Seconds until the next trigger is due (at most ``limit``)."""
        moment = float(self.clock())
        with self._lock:
            soonest = min((s.due for s in self._known.values()), default=moment + limit)
        return max(0.05, min(limit, soonest - moment))

    def run(self, stop: threading.Event) -> None:
        """The sender thread's loop: until ``stop`` is set, send what is due, then sleep until the next
        trigger is due or a new one is added."""
        while not stop.is_set():
            try:
                self.flush()
            except Exception:
                log.exception("the trigger sender hit an unexpected error; it goes on")
            self._wake.wait(self.next_wait())
            self._wake.clear()

    def wake(self) -> None:
        """A group is in the inbox now: whatever waited for it is due at once."""
        with self._lock:
            for state in self._known.values():
                if state.record.get("attempts", 0) == 0:
                    state.due = 0.0
        self._wake.set()


def _detail(text: str) -> str:
    """Airflow's message: the ``detail`` of its JSON error body, else the body's start."""
    try:
        detail = json.loads(text).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail if detail else text)[:300]


def _file_name(pipeline: str, run_id: str) -> str:
    return hashlib.sha256(f"{pipeline}\0{run_id}".encode()).hexdigest()[:32]
