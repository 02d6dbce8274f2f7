"""Tests against the distributed Airflow of ``scripts/cluster.sh`` (CeleryExecutor, PostgreSQL, Redis,
two workers), driven through the REST API as a real client would.

They run only when asked (``pytest -m distributed --run-distributed``) and need ``cluster.sh up`` first;
the whole suite does not start a cluster.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / ".cluster"


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--run-distributed", action="store_true", help="run tests/distributed (needs cluster.sh up)")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if config.getoption("--run-distributed"):
        return
    skip = pytest.mark.skip(reason="distributed tests run with --run-distributed after `bash scripts/cluster.sh up`")
    for item in items:
        if "distributed" in item.keywords:
            item.add_marker(skip)


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
        end = time.monotonic() + seconds
        found: dict[str, dict[str, Any]] = {}
        while time.monotonic() < end:
            runs = self.call(f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]
            found = {r["dag_run_id"]: r for r in runs if r["dag_run_id"] in run_ids}
            if len(found) == len(run_ids) and all(r["state"] in ("success", "failed") for r in found.values()):
                return found
            time.sleep(2)
        states = {k: v["state"] for k, v in found.items()}
        raise AssertionError(f"runs not finished within {seconds} s: {states}; see {CLUSTER / 'logs'}")


@pytest.fixture(scope="session")
def api() -> Api:
    admin = CLUSTER / "admin.json"
    if not admin.is_file():
        pytest.fail("no .cluster/admin.json: run `bash scripts/cluster.sh up` first")
    data = json.loads(admin.read_text())
    api = Api(data["url"], data["username"], data["password"])
    try:
        api.call("/api/v2/monitor/health")
    except urllib.error.URLError as exc:
        pytest.fail(f"the cluster's API at {api.url} does not answer ({exc}); run `bash scripts/cluster.sh up`")
    return api
