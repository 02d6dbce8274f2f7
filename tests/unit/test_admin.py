"""Service administration logic that needs no engine: name resolution and reaper error isolation."""

from __future__ import annotations

from typing import Any

import pytest

from clara_airflow.errors import ClaraAirflowError
from clara_airflow.services import admin
from tests.helpers import make_options
from tests.memory import MemoryStore

ROWS = [{"id": "aaaaaaaaaaaa", "backend": "kubernetes", "names": ["triton"], "idle_ttl": 60,
         "last_used": "2020-01-01T00:00:00+00:00"},
        {"id": "bbbbbbbbbbbb", "backend": "docker", "names": ["triton", "web"], "idle_ttl": 60,
         "last_used": "2020-01-01T00:00:00+00:00"}]


def test_resolve_by_id_instance_name_or_unique_service_name() -> None:
    assert admin.resolve("aaaaaaaaaaaa", ROWS)["id"] == "aaaaaaaaaaaa"
    assert admin.resolve("clara-svc-bbbbbbbbbbbb", ROWS)["id"] == "bbbbbbbbbbbb"
    assert admin.resolve("web", ROWS)["id"] == "bbbbbbbbbbbb"
    with pytest.raises(ClaraAirflowError, match="names several services"):
        admin.resolve("triton", ROWS)
    with pytest.raises(ClaraAirflowError, match="services list"):
        admin.resolve("nope", ROWS)


def test_a_failing_backend_does_not_stop_the_reaper_pass(monkeypatch: Any) -> None:
    stopped = []

    def collect_one(row: dict[str, Any], **_: Any) -> str:
        if row["backend"] == "kubernetes":
            raise ConnectionError("cluster unreachable")
        stopped.append(row["id"])
        return f"stopping clara-svc-{row['id']}"

    monkeypatch.setattr(admin, "list_services", lambda store: ROWS)
    monkeypatch.setattr(admin, "_collect_one", collect_one)
    monkeypatch.setattr(admin, "collect_steps", lambda **_: [])
    monkeypatch.setattr(admin, "_options", lambda: make_options({"remove_orphans": False}))
    report = admin.collect_services(store=MemoryStore())
    assert report[0].startswith("error on clara-svc-aaaaaaaaaaaa (kubernetes): ConnectionError")
    assert report[1] == "stopping clara-svc-bbbbbbbbbbbb" and stopped == ["bbbbbbbbbbbb"]


def test_idle_seconds_counts_from_last_use() -> None:
    from datetime import UTC, datetime

    now = datetime(2020, 1, 1, 0, 1, tzinfo=UTC)
    assert admin.idle_seconds(ROWS[0], now) == 60
    # An unknown last use is never a reason to stop (a bad record once read as "idle inf s").
    assert admin.idle_seconds({}, now) == 0
    assert admin.idle_seconds({"last_used": "garbage"}, now) == 0
