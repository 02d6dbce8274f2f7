"""A REST API client for the cluster of ``scripts/cluster.sh`` (JWT from ``/auth/token``, ``/api/v2``), as a
real client would use it. Shared by tests/distributed and scripts/bench_cluster.py."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / ".cluster"
DAG_ID = "ct-organ-triage"


@dataclass
class Api:
    url: str
    username: str
    password: str
    _token: str = field(default="", repr=False)

    def token(self) -> str:
        if not self._token:
            body = json.dumps({"username": self.username, "password": self.password}).encode()
            request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                self._token = json.loads(answer.read())["access_token"]
        return self._token

    def call(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method or ("POST" if body is not None else "GET"),
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            raw = answer.read()
            return json.loads(raw) if raw else None

    def wait_runs(self, dag_id: str, run_ids: list[str], seconds: float) -> dict[str, dict[str, Any]]:
        """Each run asked for by its id: a listing is capped at the API's page limit (100), and a cluster's
        database keeps every earlier run."""
        end = time.monotonic() + seconds
        found: dict[str, dict[str, Any]] = {}
        while time.monotonic() < end:
            for run_id in run_ids:
                if found.get(run_id, {}).get("state") not in ("success", "failed"):
                    found[run_id] = self.call(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            if all(r["state"] in ("success", "failed") for r in found.values()):
                return found
            time.sleep(2)
        states = {k: v["state"] for k, v in found.items()}
        raise AssertionError(f"runs not finished within {seconds} s: {states}; see {CLUSTER / 'logs'}")

    def settle(self, dag_id: str, seconds: float = 900) -> None:
        """Until no run of ``dag_id`` is queued or running (an earlier test's runs would hold leases)."""
        end = time.monotonic() + seconds
        while self.call(f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running&limit=1")["total_entries"]:
            if time.monotonic() > end:
                raise AssertionError(f"runs of {dag_id} still active after {seconds} s; see {CLUSTER / 'logs'}")
            time.sleep(2)

    def wait_dag(self, dag_id: str, seconds: float = 180) -> None:
        """Until the dag-processor has parsed ``dag_id`` (the API answers 200 for it)."""
        end = time.monotonic() + seconds
        while True:
            try:
                self.call(f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > end:
                    raise
            time.sleep(2)

    @classmethod
    def from_cluster(cls) -> Api:
        data = json.loads((CLUSTER / "admin.json").read_text())
        return cls(data["url"], data["username"], data["password"])


def demo_service_id() -> str:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.load import load_pipeline

    return compile_pipeline(load_pipeline(REPO / "dags" / "pipelines" / f"{DAG_ID}.yaml")).services[0].id


def phantom() -> Path:
    folder = CLUSTER / "payload" / "chest-ct-001"
    if not any(folder.glob("*.dcm")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{folder}:/out", "clara-airflow/demo-ops:0.1", "python3",
                        "/opt/clara/ops/make_phantom.py", "/out"], check=True, capture_output=True)
    return folder


def service_containers(sid: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label=clara-airflow/service-id={sid}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def when(text: str | None) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else float("inf")
