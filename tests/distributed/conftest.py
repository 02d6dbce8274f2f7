"""Tests against the distributed Airflow of ``scripts/cluster.sh`` (CeleryExecutor, PostgreSQL, Redis,
two workers), driven through the REST API as a real client would.

They run only when asked (``pytest -m distributed --run-distributed``) and need ``cluster.sh up`` first;
the whole suite does not start a cluster.
"""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import pytest

from tests.distributed.client import CLUSTER, REPO, Api

__all__ = ["CLUSTER", "REPO", "Api"]


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--run-distributed", action="store_true", help="run tests/distributed (needs cluster.sh up)")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if config.getoption("--run-distributed"):
        return
    skip = pytest.mark.skip(reason="distributed tests run with --run-distributed after `bash scripts/cluster.sh up`")
    for item in items:
        if "distributed" in item.keywords:
            item.add_marker(skip)


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
