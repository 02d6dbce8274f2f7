"""The receiver's rules that no happy path pins: who may send (AE title *and* address), the free-disk
limit in MiB, AE titles that become folder names, and ``dicom status`` / ``dicom retry`` after a bad day
(Airflow stopped, a pipeline name typo, an AE title removed from the config)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from clara_airflow.cli import main
from clara_airflow.dicom.config import load_config
from clara_airflow.dicom.receiver import Receiver
from clara_airflow.dicom.status import check_dags
from clara_airflow.dicom.trigger import AirflowClient, run_id_for
from clara_airflow.errors import SpecError
from tests.unit.dicom.test_receiver import FakeAirflow, config
from tests.unit.dicom.test_receiver_faults import gathering

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_source_must_match_its_address_too(tmp_path: Path, airflow: FakeAirflow) -> None:
    rx = Receiver(config(tmp_path, airflow))
    assert rx.refusal("MODALITY", "127.0.0.1", "CT_AI") is None
    refused = rx.refusal("MODALITY", "10.0.0.9", "CT_AI")
    assert refused is not None and refused[1] == (0x01, 0x01, 0x03)
    assert rx.refusal("STRANGER", "127.0.0.1", "CT_AI") is not None
    assert rx.refusal("MODALITY", "127.0.0.1", "NOBODY") == ("called AE title 'NOBODY' is not configured (ae_titles)",
                                                             (0x01, 0x01, 0x07))
    open_door = Receiver(config(tmp_path, airflow, reject_unknown_sources=False))
    assert open_door.refusal("ANYONE", "10.0.0.9", "CT_AI") is None


@pytest.mark.parametrize(("free_bytes", "refused"), [(5120 * 2**20, False), (5120 * 2**20 - 1, True)])
def test_the_free_disk_limit_is_in_mib(tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch,
                                       free_bytes: int, refused: bool) -> None:
    rx = Receiver(config(tmp_path, airflow, min_free_disk_mb=5120))
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**13, 0, free_bytes))  # type: ignore[attr-defined]
    why = rx.refusal("MODALITY", "127.0.0.1", "CT_AI")
    assert (why is not None) == refused
    if why:
        assert why == ("only 5119 MiB free in " + str(rx.inbox) + ", below min_free_disk_mb 5120", (0x02, 0x03, 0x02))


@pytest.mark.parametrize("title", ["../etc", "CT/AI", "..", ".", "A\\B", "SEVENTEEN_CHARS_X", "CT\x07"])
def test_routed_ae_titles_must_be_safe_folder_names(tmp_path: Path, title: str) -> None:
    path = tmp_path / "dicom.yaml"
    path.write_text(json.dumps({"inbox": "/data/in", "ae_titles": {title: {"pipelines": ["p"]}}}))
    with pytest.raises(SpecError) as err:
        load_config(path)
    (problem,) = err.value.problems
    assert problem.line == 1 and "ae_titles" in problem.message and repr(title) in problem.message


def bad_day(tmp_path: Path, airflow: FakeAirflow) -> tuple[Any, str, str]:
    """A typo'd pipeline (Airflow answers 404), a group of a removed AE title, one still gathering."""
    airflow.dags = {"p1": False}
    cfg = config(tmp_path, airflow, ae_titles={"CT_AI": {"pipelines": ["p1", "typo"], "timeout": 0.3}})
    study, old = generate_uid(), generate_uid()
    gathering(cfg, study, tmp_path)
    gathering(cfg, old, tmp_path, called="OLD_AI")
    rx = Receiver(cfg)
    rx.tick(time.monotonic() + 1)
    rx.triggers.flush()
    gathering(cfg, generate_uid(), tmp_path, count=1)
    return cfg, study, old


def test_status_after_a_bad_day(tmp_path: Path, airflow: FakeAirflow, capsys: pytest.CaptureFixture[str]) -> None:
    from clara_airflow.dicom.status import status

    cfg, study, old = bad_day(tmp_path, airflow)
    path = tmp_path / "dicom.yaml"
    path.write_text(json.dumps(cfg.model_dump()))
    assert main(["dicom", "status", "--config", str(path), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(g["ae_title"], g["state"]) for g in found["groups"]] == [("CT_AI", "gathering"), ("OLD_AI", "quarantined")]
    assert found["groups"][1]["uid"] == old and found["groups"][1]["instances"] == 2
    assert found["triggers"]["pending"] == []
    (failed,) = found["triggers"]["failed"]
    assert failed == {"run_id": run_id_for("typo", "CT_AI", study), "pipeline": "typo",
                      "reason": "HTTP 404: DAG with dag_id: 'typo' not found"}
    assert found["dags"] == {"p1": "active", "typo": "missing"}
    assert found["disk"]["min_free_mb"] == 0 and found["disk"]["free_mb"] > 0
    airflow.shutdown()  # Airflow stops: status still reads the disk, and says Airflow cannot be asked
    airflow.server_close()
    offline = status(cfg)
    assert all(state.startswith("unknown: ") for state in offline["dags"].values())
    # the pipeline is deployed under that name: dicom retry puts the failed run back
    assert main(["dicom", "retry", "--config", str(path), "--all-failed"]) == 0
    assert status(cfg, airflow=False)["triggers"]["pending"][0]["run_id"] == run_id_for("typo", "CT_AI", study)
    assert main(["dicom", "retry", "--config", str(path), "no-such-run"]) == 1


def test_a_paused_or_missing_dag_is_said_at_start(tmp_path: Path, airflow: FakeAirflow,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    airflow.dags = {"p1": True}
    cfg = config(tmp_path, airflow)
    assert check_dags(cfg, AirflowClient(cfg.airflow)) == {"p1": "paused", "p2": "missing"}
    assert "routed DAG p1 is paused: the runs the receiver starts stay queued" in caplog.text
    assert "routed DAG p2 does not exist in Airflow" in caplog.text


def test_an_instance_without_its_group_uid_is_answered_cannot_understand_and_logged(
        tmp_path: Path, airflow: FakeAirflow, caplog: pytest.LogCaptureFixture) -> None:
    """0xC000 (Cannot understand) tells the modality the instance itself is wrong, not that the receiver is
    out of resources (0xA700, worth a retry); the refusal is logged under the receiver's logger name."""
    from pydicom import dcmread

    from tests.dicom_data import ct_series
    from tests.unit.dicom.test_receiver import Running, send

    good, bad = ct_series(tmp_path / "s", study=generate_uid(), series=generate_uid(), count=2)
    ds = dcmread(bad)
    del ds.StudyInstanceUID
    ds.save_as(bad)
    rx = Running(config(tmp_path, airflow))
    try:
        assert send(rx.cfg, [good, bad]) == [0x0000, 0xC000]
    finally:
        rx.close()
    refused = [r for r in caplog.records if "no valid Study Instance UID" in r.getMessage()]
    assert [r.name for r in refused] == ["clara_airflow.dicom"]
