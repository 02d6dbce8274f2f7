"""Starting DAG runs for received studies through Airflow's public REST API, with pending triggers kept
on disk until Airflow has them.

A trigger is a file ``<spool>/<run id>.json`` written before the first attempt and removed once Airflow
answered 200 (created) or 409 (a run with that id exists already: an earlier attempt got through). So a
receiver that crashes, or an Airflow that is down, never loses a run and never starts one twice: the
run id is deterministic (pipeline + group UID).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clara_airflow.dicom.config import AirflowApi
from clara_airflow.durable import write_file

log = logging.getLogger("clara_airflow.dicom")

__all__ = ["AirflowClient", "Triggers", "run_id_for"]

_ORDER = {"immediate": 0, "higher": 1, "normal": 2, "lower": 3}
MAX_BACKOFF = 60.0


def run_id_for(pipeline: str, group_uid: str, priority: str = "normal") -> str:
    """``dicom-<priority>__<pipeline>__<group UID>`` (a digest stands for an over-long pipeline name): the
    same study for the same pipeline always gets the same run id, and the priority is where Airflow's
    scheduler can read it (:mod:`clara_airflow.priority`)."""
    name = pipeline if len(pipeline) <= 150 else hashlib.sha256(pipeline.encode()).hexdigest()[:16]
    return f"dicom-{priority}__{name}__{group_uid}"


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

    def _post(self, path: str, body: dict[str, Any], token: str | None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.api.url + path, data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def token(self, fresh: bool = False) -> str:
        if self._token is None or fresh:
            status, text = self._post("/auth/token", self._credentials(), None)
            if status not in (200, 201):
                raise PermissionError(f"Airflow refused the receiver's login at {self.api.url}/auth/token "
                                      f"(HTTP {status}): {text[:200]}")
            self._token = json.loads(text)["access_token"]
        return self._token

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> tuple[int, str]:
        """(HTTP status, body) of one trigger; 200 created, 409 exists already."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
        status, text = self._post(path, body, self.token())
        if status == 401:
            status, text = self._post(path, body, self.token(fresh=True))
        return status, text


@dataclass
class _Pending:
    path: Path
    due: float = 0.0
    delay: float = 1.0


class Triggers:
    """The on-disk queue of DAG runs to start, tried in priority order with exponential back-off.

    :param spool: the folder of pending triggers (kept across restarts).
    """

    def __init__(self, spool: Path, client: AirflowClient) -> None:
        self.spool = spool
        self.failed = spool.parent / "failed-triggers"
        self.client = client
        self._pending: dict[str, _Pending] = {}
        spool.mkdir(parents=True, exist_ok=True)

    def add(self, pipeline: str, run_id: str, conf: dict[str, Any], priority: str) -> None:
        """Keep the trigger on disk first; :meth:`flush` sends it."""
        record = {"dag_id": pipeline, "run_id": run_id, "conf": conf, "priority": priority, "queued": time.time()}
        write_file(self.spool / f"{_file_name(pipeline, run_id)}.json", json.dumps(record), mode=0o600)

    def pending(self) -> list[dict[str, Any]]:
        """Every trigger on disk, most urgent first (priority, then age)."""
        found = []
        for path in self.spool.glob("*.json"):
            try:
                found.append({**json.loads(path.read_text(encoding="utf-8")), "_path": path})
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda r: (_ORDER.get(r.get("priority", "normal"), 2), r.get("queued", 0)))

    def flush(self, now: float | None = None) -> int:
        """Send every due trigger; returns how many Airflow now has."""
        moment = time.monotonic() if now is None else now
        sent = 0
        for record in self.pending():
            path: Path = record["_path"]
            state = self._pending.setdefault(path.name, _Pending(path))
            if state.due > moment:
                continue
            try:
                status, text = self.client.trigger(record["dag_id"], record["run_id"], record["conf"])
            except (OSError, PermissionError, ValueError) as exc:
                status, text = 0, str(exc)
            if status in (200, 201, 409):
                log.info("run started: dag_id=%s run_id=%s priority=%s http=%d%s", record["dag_id"], record["run_id"],
                         record.get("priority"), status, " (it existed already)" if status == 409 else "")
                path.unlink(missing_ok=True)
                self._pending.pop(path.name, None)
                sent += 1
            elif status in (400, 403, 422):
                self.failed.mkdir(parents=True, exist_ok=True)
                os.replace(path, self.failed / path.name)
                self._pending.pop(path.name, None)
                log.error("Airflow refused the run %s of %s (HTTP %d): %s; the trigger is kept in %s, fix the cause "
                          "and move it back to %s", record["run_id"], record["dag_id"], status, text[:300],
                          self.failed, self.spool)
            else:
                state.due, state.delay = moment + state.delay, min(MAX_BACKOFF, state.delay * 2)
                log.warning("cannot start %s of %s yet (%s); retrying in %.0f s, the trigger is kept in %s",
                            record["run_id"], record["dag_id"], f"HTTP {status}: {text[:200]}" if status else text,
                            state.due - moment, path)
        return sent


def _file_name(pipeline: str, run_id: str) -> str:
    return hashlib.sha256(f"{pipeline}\0{run_id}".encode()).hexdigest()[:32]
