"""``dicom status`` as people and scripts read it: every state a group can be in, each field of a
trigger, the text lines, and ``dicom retry`` of one run among several."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.dicom.groups import Folders
from clara_airflow.dicom.status import render, retry, status
from tests.unit.dicom.test_receiver import FakeAirflow, config


def _group(root: Path, called: str, uid: str, count: int, age: float) -> Path:
    folder = root / called / uid
    folder.mkdir(parents=True)
    stamp = time.time() - age
    for i in range(count):
        (folder / f"1.2.{i}.dcm").write_bytes(b"x")
        os.utime(folder / f"1.2.{i}.dcm", (stamp, stamp))
    (folder / "not-an-instance.txt").write_text("ignored")
    return folder


def _trigger(folder: Path, name: str, record: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"conf": {}, **record}))
    return folder / f"{name}.json"


@pytest.fixture
def rig(tmp_path: Path, airflow: FakeAirflow) -> Any:
    cfg = config(tmp_path, airflow, min_free_disk_mb=1)
    folders = Folders(cfg.inbox)
    _group(folders.gathering, "CT_AI", "1.1", 3, age=40)
    _group(folders.quarantine, "OLD_AI", "1.2", 2, age=0)
    _group(folders.unrouted_root, "CT_AI", "1.3", 1, age=0)
    _group(folders.incoming / "a7", "SERIES", "1.4", 4, age=0)  # an association still open (or a killed receiver's)
    _trigger(folders.spool, "one", {"dag_id": "p1", "run_id": "dicom-a", "queued": 2, "attempts": 3,
                                    "last_error": "Airflow answered 503"})
    _trigger(folders.spool, "two", {"dag_id": "p2", "run_id": "dicom-b", "queued": 1})
    failed = folders.spool.parent / "failed-triggers"
    _trigger(failed, "three", {"dag_id": "typo", "run_id": "dicom-c", "queued": 0.5, "attempts": 9,
                               "last_error": "HTTP 404", "reason": "HTTP 404: DAG typo not found"})
    _trigger(failed, "four", {"dag_id": "p1", "run_id": "dicom-d", "queued": 3, "reason": "HTTP 403: no"})
    return cfg, folders


def test_every_group_state_and_trigger_field_is_reported(rig: Any) -> None:
    cfg, _ = rig
    found = status(cfg, airflow=False)
    assert "dags" not in found
    assert [(g["ae_title"], g["uid"], g["instances"], g["state"]) for g in found["groups"]] == [
        ("CT_AI", "1.1", 3, "gathering"), ("OLD_AI", "1.2", 2, "quarantined"), ("CT_AI", "1.3", 1, "unrouted"),
        ("SERIES", "1.4", 4, "gathering")]
    assert 39 <= found["groups"][0]["quiet_seconds"] <= 45 and found["groups"][1]["quiet_seconds"] < 5
    assert found["triggers"]["pending"] == [
        {"run_id": "dicom-b", "pipeline": "p2", "attempts": 0, "last_error": ""},
        {"run_id": "dicom-a", "pipeline": "p1", "attempts": 3, "last_error": "Airflow answered 503"}]
    assert found["triggers"]["failed"] == [
        {"run_id": "dicom-c", "pipeline": "typo", "reason": "HTTP 404: DAG typo not found"},
        {"run_id": "dicom-d", "pipeline": "p1", "reason": "HTTP 403: no"}]
    assert found["disk"]["min_free_mb"] == 1 and found["disk"]["free_mb"] > 1


def test_an_empty_group_is_as_quiet_as_its_folder(tmp_path: Path, airflow: FakeAirflow) -> None:
    cfg = config(tmp_path, airflow)
    folder = Folders(cfg.inbox).gathering / "CT_AI" / "1.9"
    folder.mkdir(parents=True)
    stamp = time.time() - 100
    os.utime(folder, (stamp, stamp))
    (group,) = status(cfg, airflow=False)["groups"]
    assert group["instances"] == 0 and 99 <= group["quiet_seconds"] <= 105


def test_no_inbox_yet_reads_as_nothing_held(tmp_path: Path, airflow: FakeAirflow) -> None:
    found = status(config(tmp_path, airflow), airflow=False)
    assert found["groups"] == [] and found["triggers"] == {"pending": [], "failed": []}
    assert found["disk"]["free_mb"] == 0


def test_the_text_for_people_has_one_line_per_thing_held(rig: Any) -> None:
    cfg, _ = rig
    found = status(cfg, airflow=False)
    found["groups"][0]["quiet_seconds"] = 40.4
    found["dags"] = {"p1": "active", "typo": "missing", "p2": "paused", "p3": "unknown: connection refused"}
    found["disk"] = {"free_mb": 900, "min_free_mb": 1000}
    assert render(found).splitlines() == [
        "group  gathering   CT_AI/1.1  3 instances, quiet 40 s",
        "group  quarantined OLD_AI/1.2  2 instances, quiet 0 s",
        "group  unrouted    CT_AI/1.3  1 instances, quiet 0 s",
        "group  gathering   SERIES/1.4  4 instances, quiet 0 s",
        "run    pending     p2 dicom-b  0 attempts",
        "run    pending     p1 dicom-a  3 attempts, last error: Airflow answered 503",
        "run    failed      typo dicom-c  HTTP 404: DAG typo not found",
        "run    failed      p1 dicom-d  HTTP 403: no",
        "dag    paused      p2  paused",
        "dag    unknown     p3  unknown: connection refused",
        "dag    missing     typo  missing",
        "disk   900 MiB free (min_free_disk_mb 1000)  LOW: associations are refused"]
    found["disk"] = {"free_mb": 1000, "min_free_mb": 1000}
    assert render(found).splitlines()[-1] == "disk   1000 MiB free (min_free_disk_mb 1000)"


def test_retry_of_one_run_moves_only_it_back_with_a_fresh_count(rig: Any) -> None:
    cfg, folders = rig
    failed = folders.spool.parent / "failed-triggers"
    assert retry(folders.spool, "dicom-d") == ["dicom-d"]
    assert not (failed / "four.json").exists() and (failed / "three.json").exists()
    moved = json.loads((folders.spool / "four.json").read_text())
    assert moved == {"conf": {}, "dag_id": "p1", "run_id": "dicom-d", "queued": 3, "attempts": 0, "last_error": ""}
    assert (folders.spool / "four.json").stat().st_mode & 0o777 == 0o600
    assert retry(folders.spool, "no-such-run") == []
    assert retry(folders.spool, None) == ["dicom-c"]
    assert [t["run_id"] for t in status(cfg, airflow=False)["triggers"]["pending"]] == [
        "dicom-c", "dicom-b", "dicom-a", "dicom-d"]


def test_disk_free_is_whole_mib_and_quiet_time_tenths(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    cfg, folders = rig
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**13, 0, 5 * 2**30 + 2**20 - 1))  # type: ignore[attr-defined]
    found = status(cfg, airflow=False)
    assert found["disk"]["free_mb"] == 5120 and isinstance(found["disk"]["free_mb"], int)
    import types

    from clara_airflow.dicom import status as module

    newest = max(p.stat().st_mtime for p in (folders.gathering / "CT_AI" / "1.1").glob("*.dcm"))
    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: newest + 40.26))
    assert status(cfg, airflow=False)["groups"][0]["quiet_seconds"] == 40.3


def test_a_failed_trigger_without_a_reason_reads_as_empty(rig: Any) -> None:
    cfg, folders = rig
    _trigger(folders.spool.parent / "failed-triggers", "five", {"dag_id": "p9", "run_id": "dicom-e", "queued": 9})
    assert status(cfg, airflow=False)["triggers"]["failed"][-1] == {"run_id": "dicom-e", "pipeline": "p9",
                                                                   "reason": ""}


def test_status_asks_airflow_with_a_short_timeout(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from clara_airflow.dicom import status as module

    asked: list[float] = []

    class Client:
        def __init__(self, settings: Any, timeout: float) -> None:
            asked.append(timeout)

        def dag_state(self, dag_id: str) -> str:
            return "active"

    monkeypatch.setattr(module, "AirflowClient", Client)
    assert status(rig[0])["dags"] == {"p1": "active", "p2": "active"}
    assert asked == [5.0]


def test_a_missing_or_paused_dag_is_logged_with_what_to_do(rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    from clara_airflow.dicom.status import check_dags

    class Client:
        def dag_state(self, dag_id: str) -> str:
            return {"p1": "missing", "p2": "paused"}[dag_id]

    assert check_dags(rig[0], Client()) == {"p1": "missing", "p2": "paused"}  # type: ignore[arg-type]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("clara_airflow.dicom", "ERROR", "routed DAG p1 does not exist in Airflow: its triggers will fail (HTTP 404); "
                                         "deploy the pipeline or fix ae_titles"),
        ("clara_airflow.dicom", "WARNING", "routed DAG p2 is paused: the runs the receiver starts stay queued until "
                                           "it is unpaused (airflow dags unpause p2)")]
