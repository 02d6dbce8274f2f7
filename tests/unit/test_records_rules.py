"""records.py rule by rule: the exact JSON written, the joined row people see, and each parser verdict."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from clara_airflow.backends.base import ServiceInstance
from clara_airflow.services import records
from clara_airflow.services.records import (
    BadRecord,
    ServiceRecord,
    ServiceUse,
    parse,
    recorded_ids,
    service_view,
    touch,
    use_key,
    write_record,
    write_use,
)
from tests.helpers import busybox_service
from tests.memory import MemoryStore

SID = "abcdefabcdef"


def svc() -> Any:
    return busybox_service(SID, "serve", 8080, name="web")


def instance() -> ServiceInstance:
    return ServiceInstance(SID, f"clara-svc-{SID}", True, "c1", "2026-01-02T03:04:05.678Z", {"/d": "vol-1"}, ("1",))


def test_the_record_written_is_exactly_the_instance_facts(monkeypatch: Any) -> None:
    monkeypatch.setattr(records, "now", lambda: "NOW")
    store = MemoryStore()
    write_record(svc(), instance(), backend="docker", location={"network": "n"}, store=store)
    expected = {"id": SID, "identity": {"image": "clara-airflow/busybox", "tag": "1", "command": ["/bin/sh", "-c", "serve"]},
                "backend": "docker", "location": {"network": "n"}, "host": f"clara-svc-{SID}", "ports": [8080],
                "volumes": {"/d": "vol-1"}, "requests": {"cpu": 1, "memory": 64, "gpu": 0},
                "started_at": "2026-01-02T03:04:05+00:00", "last_used": "NOW", "devices": ["1"], "schema": 1}
    assert store.data[f"clara_service_{SID}"] == json.dumps(expected, sort_keys=True)
    write_record(svc(), dataclasses.replace(instance(), started_at=""), backend="docker", location={}, store=store)
    assert json.loads(store.data[f"clara_service_{SID}"])["started_at"] == "NOW"


def test_the_use_written_is_exactly_this_pipelines_facts(monkeypatch: Any) -> None:
    monkeypatch.setattr(records, "now", lambda: "NOW")
    store = MemoryStore()
    write_use(svc(), dag_id="dag-a", connections={"WEB_URI": "h:8080"}, idle_ttl=99, store=store)
    expected = {"service": SID, "dag_id": "dag-a", "names": ["web"], "connections": {"WEB_URI": "h:8080"},
                "idle_ttl": 99, "last_used": "NOW", "schema": 1}
    assert store.data[use_key(SID, "dag-a")] == json.dumps(expected, sort_keys=True)
    monkeypatch.setattr(records, "now", lambda: "LATER")
    touch(SID, "dag-a", store)
    assert store.data[use_key(SID, "dag-a")] == json.dumps({**expected, "last_used": "LATER"}, sort_keys=True)


def test_the_use_key_is_the_service_and_16_hex_of_the_dag() -> None:
    import hashlib

    assert use_key(SID, "d") == f"clara_use_{SID}_{hashlib.sha256(b'd').hexdigest()[:16]}"


def test_the_joined_row(monkeypatch: Any) -> None:
    store = MemoryStore()
    monkeypatch.setattr(records, "now", lambda: "2026-01-01T00:00:00+00:00")
    write_record(svc(), instance(), backend="kubernetes", location={"namespace": "ns"}, store=store)
    write_use(svc(), dag_id="b", connections={"WEB_URI": "x:1"}, idle_ttl=100, store=store)
    monkeypatch.setattr(records, "now", lambda: "2026-01-01T00:00:09+00:00")
    write_use(dataclasses.replace(svc(), names=("alt",)), dag_id="a", connections={"ALT": "x:2"}, idle_ttl=50,
              store=store)
    assert service_view(SID, store).as_row() == {
        "id": SID, "identity": {"image": "clara-airflow/busybox", "tag": "1", "command": ["/bin/sh", "-c", "serve"]},
        "image": "clara-airflow/busybox", "tag": "1", "backend": "kubernetes", "location": {"namespace": "ns"},
        "host": f"clara-svc-{SID}", "container": f"clara-svc-{SID}", "ports": [8080], "volumes": {"/d": "vol-1"},
        "requests": {"cpu": 1, "memory": 64, "gpu": 0}, "devices": ["1"], "started_at": "2026-01-02T03:04:05+00:00",
        "last_used": "2026-01-01T00:00:09+00:00", "idle_ttl": 100, "connections": {"ALT": "x:2", "WEB_URI": "x:1"},
        "names": ["alt", "web"], "pipelines": ["a", "b"]}


def test_a_row_with_no_record_and_a_bad_one() -> None:
    store = MemoryStore()
    store.set(f"clara_service_{SID}", "[]")
    row = service_view(SID, store).as_row()
    assert row == {"id": SID, "identity": {}, "image": "?", "tag": "?", "backend": "docker", "location": {},
                   "host": f"clara-svc-{SID}", "container": f"clara-svc-{SID}", "ports": [], "volumes": {},
                   "requests": {}, "devices": [], "started_at": "", "last_used": "", "idle_ttl": 3600, "connections": {},
                   "names": [], "pipelines": [],
                   "bad": [f"clara_service_{SID}: not a JSON object but list"]}


def test_last_used_is_the_latest_readable_time() -> None:
    rec = ServiceRecord(SID, {}, "docker", {}, "h", [], {}, {}, "s", "2026-01-01T00:00:05+00:00")
    uses = tuple(ServiceUse(SID, d, [], {}, 60, t) for d, t in
                 (("a", "2026-01-01T00:00:09+00:00"), ("b", "garbage"), ("c", "2026-01-01T00:00:01+00:00")))
    view = records.ServiceView(SID, rec, uses)
    assert view.last_used == "2026-01-01T00:00:09+00:00" and view.idle_ttl == 60
    assert records.ServiceView(SID, None).last_used == "" and records.ServiceView(SID, None).idle_ttl == 3600
    assert records.ServiceView(SID, rec).last_used == "2026-01-01T00:00:05+00:00"
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.id = "x"  # type: ignore[misc]


GOOD_USE = {"service": SID, "dag_id": "d", "names": ["n"], "connections": {"A": "h:1"}, "idle_ttl": 60,
            "last_used": "t", "schema": 1}


@pytest.mark.parametrize(("raw", "reason"), [
    ("not json", "not JSON"),
    ("[1]", "not a JSON object but list"),
    ('"x"', "not a JSON object but str"),
    (json.dumps({**GOOD_USE, "schema": 2}), "schema 2 is not 1 (written by another version)"),
    (json.dumps({"service": SID}), "missing dag_id, names, connections, idle_ttl, last_used"),
    (json.dumps({**GOOD_USE, "dag_id": 5}), "field 'dag_id' is int, not str"),
    (json.dumps({**GOOD_USE, "idle_ttl": "60"}), "field 'idle_ttl' is str, not int"),
    (json.dumps({**GOOD_USE, "idle_ttl": True}), "field 'idle_ttl' is bool, not int"),
    (json.dumps({**GOOD_USE, "names": "n"}), "field 'names' is str, not list[str]"),
    (json.dumps({**GOOD_USE, "connections": []}), "field 'connections' is list, not dict[str, str]")])
def test_each_parser_verdict(raw: str, reason: str) -> None:
    found = parse("k", raw, ServiceUse)
    assert found == BadRecord("k", reason, raw[:200])


@pytest.mark.parametrize(("field", "value", "kind"), [("ports", {}, "list[int]"), ("requests", [], "dict[str, int]"),
                                                     ("identity", "x", "dict[str, Any]")])
def test_record_field_types(field: str, value: object, kind: str) -> None:
    good = {"id": SID, "identity": {}, "backend": "docker", "location": {}, "host": "h", "ports": [], "volumes": {},
            "requests": {}, "started_at": "s", "last_used": "t"}
    assert isinstance(parse("k", json.dumps(good), ServiceRecord), ServiceRecord)
    found = parse("k", json.dumps({**good, field: value}), ServiceRecord)
    assert isinstance(found, BadRecord) and found.reason == f"field '{field}' is {type(value).__name__}, not {kind}"


def test_a_good_use_parses_and_raw_text_is_kept_to_200_characters() -> None:
    assert parse("k", json.dumps(GOOD_USE), ServiceUse) == ServiceUse(SID, "d", ["n"], {"A": "h:1"}, 60, "t")
    assert parse("k", "", ServiceUse) is None and parse("k", None, ServiceUse) is None
    long = "x" * 300
    assert parse("k", long, ServiceUse) == BadRecord("k", "not JSON", "x" * 200)
    assert parse("k", "[" + "1," * 150 + "1]", ServiceUse).raw == ("[" + "1," * 150 + "1]")[:200]  # type: ignore[union-attr]


def test_ids_come_from_records_and_from_uses_alone() -> None:
    store = MemoryStore()
    store.set("clara_service_aaaaaaaaaaaa", "{}")
    write_use(dataclasses.replace(svc(), id="bbbbbbbbbbbb"), dag_id="x_y_z", connections={}, idle_ttl=60, store=store)
    assert recorded_ids(store) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]


def test_record_use_writes_both_and_returns_the_view() -> None:
    store = MemoryStore()
    view = records.record_use(svc(), instance(), backend="docker", dag_id="d", idle_ttl=77, connections={"A": "b"},
                              store=store)
    assert view.record is not None and view.record.location == {} and [u.idle_ttl for u in view.uses] == [77]
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.record.id = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.uses[0].dag_id = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        BadRecord("k", "r").reason = "x"  # type: ignore[misc]
    assert records.DEFAULT_IDLE_TTL == 3600


def test_the_defaults_of_a_bad_record_and_of_a_view_are_empty() -> None:
    from clara_airflow.services.records import BadRecord, ServiceView

    assert BadRecord("clara_service_x", "not JSON").raw == ""
    view = ServiceView("aaaaaaaaaaaa", None)
    assert (view.uses, view.bad) == ((), ())
