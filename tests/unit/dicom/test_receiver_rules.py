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
from clara_airflow.dicom.routing import valid_uid
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


def test_a_uid_is_at_most_64_characters_of_digits_and_dots() -> None:
    longest = "1." + "2" * 62
    assert valid_uid(longest) == longest and valid_uid(f" {longest} ") == longest
    assert valid_uid(longest + "3") is None, "65 characters: not a DICOM UID (and too long a folder name)"
    assert [valid_uid(v) for v in (None, "", "1..2", "1.2/3", "../1")] == [None] * 5


def test_a_header_longer_than_the_first_read_is_read_from_the_file(tmp_path: Path, airflow: FakeAirflow) -> None:
    """An instance whose Study Instance UID lies past the first read (a long element before it): no real
    stub, pydicom reads what it can of the first bytes and finds no UID there, so the file is read."""
    import warnings

    from pydicom import dcmread

    from clara_airflow.dicom.routing import HEAD
    from tests.dicom_data import ct_series
    from tests.unit.dicom.test_receiver import Running, send, wait_for

    study = generate_uid()
    (path,) = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=1)
    ds = dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: too long for LT, written as UN
        ds.PatientComments = "x" * (HEAD + 1000)  # (0010,4000): before the UIDs in (0020,xxxx)
        ds.save_as(path)
    rx = Running(config(tmp_path, airflow))
    try:
        assert send(rx.cfg, [path]) == [0x0000]
        wait_for(lambda: list((Path(rx.cfg.inbox) / "CT_AI" / study).glob("*.dcm")))
    finally:
        rx.close()


def test_a_first_read_that_does_not_parse_falls_back_to_the_whole_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import os

    import pydicom
    from pydicom.errors import InvalidDicomError

    from clara_airflow.dicom.routing import HEAD, header_uid
    from tests.dicom_data import ct_series

    study = generate_uid()
    (path,) = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=1)
    with path.open("ab") as grown:  # past the first read, so that the file is worth reading whole
        grown.write(b"\0" * HEAD)
    real = pydicom.dcmread

    def first_read_fails(source: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(source, io.BytesIO):
            raise InvalidDicomError("cut inside an element")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", first_read_fails)
    handle = os.open(path, os.O_RDONLY)
    try:
        assert header_uid(handle, path, "StudyInstanceUID") == study
    finally:
        os.close(handle)


def test_a_completion_that_hit_a_disk_error_is_tried_again_5_s_later(
        tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from clara_airflow.dicom import groups
    from tests.unit.dicom.test_receiver_faults import full

    cfg = config(tmp_path, airflow)
    study = generate_uid()
    gathering(cfg, study, tmp_path)
    rx = Receiver(cfg)
    began = time.monotonic() + 1
    with monkeypatch.context() as fault:
        fault.setattr(groups, "write_file", full)
        rx.tick(began)
    assert _refusals(caplog) == [f"group {study} of CT_AI not completed ([Errno 28] No space left on device); it "
                                 "stays gathering, tried again in 5 s"]
    done = Path(cfg.inbox) / "CT_AI" / study
    rx.tick(began + 4.9)
    assert not done.exists(), "tried again before its 5 s"
    rx.tick(began + 5.0)
    assert done.is_dir()


def test_the_association_log_line_counts_what_it_stored(tmp_path: Path, airflow: FakeAirflow,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import re

    from tests.dicom_data import ct_series
    from tests.unit.dicom.test_receiver import Running, send, wait_for

    caplog.set_level(logging.INFO, "clara_airflow.dicom")
    study = generate_uid()
    rx = Running(config(tmp_path, airflow))
    try:
        assert send(rx.cfg, ct_series(tmp_path / "s", study=study, series=generate_uid(), count=2)) == [0, 0]
        stored = wait_for(lambda: sorted((Path(rx.cfg.inbox) / "CT_AI" / study).glob("*.dcm")))
    finally:
        rx.close()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("association released")]
    size = sum(p.stat().st_size for p in stored)
    found = re.fullmatch(rf"association released: calling=MODALITY host=127\.0\.0\.1 called=CT_AI instances=2 "
                         rf"bytes={size} seconds=([0-9.]+) groups={study}", line)
    assert found and float(found.group(1)) < 30, line


def test_the_association_log_line_lists_its_groups_or_none(tmp_path: Path, airflow: FakeAirflow,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from types import SimpleNamespace

    from tests.dicom_data import ct_series

    caplog.set_level(logging.INFO, "clara_airflow.dicom")
    rx = Receiver(config(tmp_path, airflow))
    series = sorted(generate_uid() for _ in range(2))
    study, assoc, empty = generate_uid(), _accept(rx, "SERIES"), _accept(rx, key="a2")
    for uid in series:
        (path,) = ct_series(tmp_path / uid, study=study, series=uid, count=1)
        assert _store(rx, assoc, path) == 0
    rx.on_aborted(SimpleNamespace(assoc=assoc))
    rx.on_released(SimpleNamespace(assoc=empty))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("association ")]
    assert [line.split(" calling=")[0] + " " + line.split(" groups=")[1] for line in lines] == [
        f"association aborted (its instances are discarded): {','.join(series)}", "association released: -"]
    assert " called=CT_AI instances=0 bytes=0 seconds=" in lines[1]


def _accept(rx: Receiver, called: str = "CT_AI", key: str = "a1") -> Any:
    """An association ``rx`` accepted from MODALITY (what its ``on_requested`` records)."""
    from types import SimpleNamespace

    from clara_airflow.dicom.receiver import _Association

    assoc = SimpleNamespace()
    rx._open[id(assoc)] = _Association(key, "MODALITY", called, "127.0.0.1", 0.0)
    return assoc


def _store(rx: Receiver, assoc: Any, path: Path) -> int:
    """``on_store`` as pynetdicom calls it."""
    from types import SimpleNamespace

    request = SimpleNamespace(AffectedSOPInstanceUID=generate_uid())
    return int(rx.on_store(SimpleNamespace(assoc=assoc, request=request, dataset_path=str(path))))


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "clara_airflow.dicom" and r.levelname != "INFO"]


def test_an_instance_of_exactly_max_instance_mb_is_taken_and_one_byte_more_is_refused(
        tmp_path: Path, airflow: FakeAirflow, caplog: pytest.LogCaptureFixture) -> None:
    rx = Receiver(config(tmp_path, airflow, max_instance_mb=1))
    (tmp_path / "exact").write_bytes(b"\0" * 2**20)  # not DICOM: past the size limit, refused as not understood
    (tmp_path / "over").write_bytes(b"\0" * (2**20 + 1))
    assoc = _accept(rx)
    assert _store(rx, assoc, tmp_path / "exact") == 0xC000
    assert _store(rx, assoc, tmp_path / "over") == 0xA700
    assert _refusals(caplog) == [
        "instance refused: calling=MODALITY no valid Study Instance UID or SOP Instance UID",
        "instance refused: calling=MODALITY sent 1 MiB in one instance, above max_instance_mb 1"]


def test_the_refusal_names_the_series_uid_for_an_ae_title_grouped_by_series(
        tmp_path: Path, airflow: FakeAirflow, caplog: pytest.LogCaptureFixture) -> None:
    rx = Receiver(config(tmp_path, airflow))
    (tmp_path / "junk").write_bytes(b"not DICOM")
    assert _store(rx, _accept(rx, "SERIES"), tmp_path / "junk") == 0xC000
    assert _refusals(caplog) == ["instance refused: calling=MODALITY no valid Series Instance UID or SOP Instance UID"]


def test_an_instance_sent_to_the_echo_title_is_not_understood(tmp_path: Path, airflow: FakeAirflow,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The listener's own AE title takes associations (for C-ECHO) but routes to no pipeline."""
    from tests.dicom_data import ct_series

    rx = Receiver(config(tmp_path, airflow))
    (path,) = ct_series(tmp_path / "s", study=generate_uid(), series=generate_uid(), count=1)
    assert _store(rx, _accept(rx, "CLARA"), path) == 0xC000
    assert _refusals(caplog) == [
        "instance refused: calling=MODALITY sent to CLARA, which routes to no pipeline (ae_titles)"]


def test_a_disk_error_on_one_instance_is_out_of_resources_and_the_next_one_is_stored(
        tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """0xA700 tells the modality to send it again; the group's folder, made by the failed store, is reused."""
    from clara_airflow.dicom import receiver
    from tests.dicom_data import ct_series
    from tests.unit.dicom.test_receiver_faults import full

    rx = Receiver(config(tmp_path, airflow))
    study = generate_uid()
    first, second = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=2)
    assoc = _accept(rx)
    with monkeypatch.context() as fault:
        fault.setattr(receiver, "adopt", full)
        assert _store(rx, assoc, first) == 0xA700
    assert _store(rx, assoc, second) == 0x0000
    with monkeypatch.context() as fault:
        fault.setattr(receiver.os, "open", full)
        assert _store(rx, assoc, first) == 0xA700
    assert _refusals(caplog) == ["instance not stored (calling=MODALITY): [Errno 28] No space left on device"] * 2
    assert len(list((Path(rx.inbox) / ".clara-receiver" / "incoming" / "a1" / "CT_AI" / study).iterdir())) == 1


def test_the_quiet_time_counts_from_the_last_instance_even_of_an_aborted_association(
        tmp_path: Path, airflow: FakeAirflow) -> None:
    """A group gathered by one association, then an instance of it on another that aborts: the group waits
    its quiet time from that last instance, not from the first association's end."""
    from types import SimpleNamespace

    from tests.dicom_data import ct_series

    rx = Receiver(config(tmp_path, airflow))  # CT_AI: 0.6 s of quiet time
    study = generate_uid()
    first, second = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=2)
    released = _accept(rx)
    assert _store(rx, released, first) == 0
    rx.on_released(SimpleNamespace(assoc=released))
    assert rx.pending_groups() == 1, "a released group waits for its quiet time"
    later = _accept(rx, key="a2")
    assert _store(rx, later, second) == 0
    stored = time.monotonic()
    rx.on_aborted(SimpleNamespace(assoc=later))
    rx.tick(stored + 0.3)
    assert not (Path(rx.inbox) / "CT_AI" / study).exists(), "completed before its quiet time after the last instance"
    rx.tick(stored + 0.7)
    assert (Path(rx.inbox) / "CT_AI" / study).is_dir()


def test_instances_a_release_could_not_move_stay_and_the_next_start_completes_their_group(
        tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Acknowledged instances are never deleted: a disk error while a released association's instances join
    their group keeps them where they are, and the next start adds them to it."""
    from types import SimpleNamespace

    from tests.dicom_data import ct_series
    from tests.unit.dicom.test_receiver_faults import full

    cfg = config(tmp_path, airflow)
    rx = Receiver(cfg)
    study = generate_uid()
    assoc = _accept(rx)
    assert [_store(rx, assoc, p) for p in ct_series(tmp_path / "s", study=study, series=generate_uid())] == [0] * 3
    kept = Path(cfg.inbox) / ".clara-receiver" / "incoming" / "a1"
    with monkeypatch.context() as fault:
        fault.setattr(rx.folders, "merge", full)
        rx.on_released(SimpleNamespace(assoc=assoc))
    assert len(list((kept / "CT_AI" / study).glob("*.dcm"))) == 3, "acknowledged instances were deleted"
    assert _refusals(caplog) == [f"association a1: instances of group {study} not moved to their group ([Errno 28] "
                                 f"No space left on device); they are kept in {kept} and join it before it completes"]
    restarted = Receiver(cfg)
    restarted.tick(time.monotonic() + 1)
    assert len(list((Path(cfg.inbox) / "CT_AI" / study).glob("*.dcm"))) == 3 and not kept.exists()


def test_instances_a_release_could_not_move_join_their_group_before_it_completes(
        tmp_path: Path, airflow: FakeAirflow, caplog: pytest.LogCaptureFixture) -> None:
    """The running receiver never completes a group without an instance it acknowledged for it: instances a
    release could not move (a disk error: here a real read-only mount of the groups' folder) join the group
    when it completes, and while the move still fails the completion waits (tried again 5 s later), the
    group and its instances kept."""
    from types import SimpleNamespace

    from tests.dicom_data import ct_series
    from tests.filesystems import read_only

    cfg = config(tmp_path, airflow)
    rx = Receiver(cfg)
    study = generate_uid()
    first, second = _accept(rx), _accept(rx, key="a2")
    files = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=4)
    assert [_store(rx, first, p) for p in files[:2]] + [_store(rx, second, p) for p in files[2:]] == [0] * 4
    rx.on_released(SimpleNamespace(assoc=first))  # its two instances are gathering
    incoming, done = Path(cfg.inbox) / ".clara-receiver" / "incoming", Path(cfg.inbox) / "CT_AI" / study
    now = time.monotonic()
    with read_only(rx.folders.gathering):
        rx.on_released(SimpleNamespace(assoc=second))  # its two stay in incoming/a2
        rx.tick(now + 60)  # quiet, but the move still fails: not completed
    assert not done.exists() and len(list((incoming / "a2").rglob("*.dcm"))) == 2
    refused = _refusals(caplog)
    assert refused[0].startswith(f"association a2: instances of group {study} not moved to their group ([Errno ")
    assert refused[-1].startswith(f"group {study} of CT_AI not completed ([Errno ")
    assert refused[-1].endswith("); it stays gathering, tried again in 5 s")
    rx.tick(now + 64)
    assert not done.exists(), "tried again before its 5 s"
    rx.tick(now + 65)
    assert len(list(done.glob("*.dcm"))) == 4, "the group completed without instances acknowledged for it"
    assert (done / ".complete").read_text().startswith("4 instances\n") and not (incoming / "a2").exists()
    assert rx.pending_groups() == 0


def test_an_association_s_folder_goes_only_once_none_of_its_stuck_groups_is_left_in_it(
        tmp_path: Path, airflow: FakeAirflow) -> None:
    """One association sent two studies, and neither could join its group at the release: the first to
    complete must leave the other's acknowledged instances where they are."""
    from types import SimpleNamespace

    from tests.dicom_data import ct_series
    from tests.filesystems import read_only

    cfg = config(tmp_path, airflow)
    rx = Receiver(cfg)
    studies, assoc = [generate_uid(), generate_uid()], _accept(rx)
    for study in studies:
        files = ct_series(tmp_path / study, study=study, series=generate_uid(), count=2)
        assert [_store(rx, assoc, p) for p in files] == [0, 0]
    with read_only(rx.folders.gathering):
        rx.on_released(SimpleNamespace(assoc=assoc))
    rx.tick(time.monotonic() + 60)
    for study in studies:
        assert len(list((Path(cfg.inbox) / "CT_AI" / study).glob("*.dcm"))) == 2, "acknowledged instances were lost"
    assert not (Path(cfg.inbox) / ".clara-receiver" / "incoming" / "a1").exists()


def test_an_aborted_association_leaves_no_pending_group(tmp_path: Path, airflow: FakeAirflow) -> None:
    from types import SimpleNamespace

    from tests.dicom_data import ct_series

    rx = Receiver(config(tmp_path, airflow))
    assoc, other = _accept(rx), _accept(rx, key="a2")
    study = generate_uid()
    first, second = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=2)
    assert _store(rx, assoc, first) == _store(rx, other, second) == 0
    rx.on_aborted(SimpleNamespace(assoc=assoc))
    assert rx.pending_groups() == 1, "the group another association still sends was forgotten"
    rx.on_aborted(SimpleNamespace(assoc=other))
    assert rx.pending_groups() == 0, "nothing gathers the group any more, yet it is pending"


def test_a_group_complete_already_keeps_its_late_instances_aside_and_says_so(
        tmp_path: Path, airflow: FakeAirflow, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, airflow)
    study = generate_uid()
    (Path(cfg.inbox) / "CT_AI" / study).mkdir(parents=True)  # completed (and maybe processed) before
    gathering(cfg, study, tmp_path)
    rx = Receiver(cfg)
    rx.tick(time.monotonic() + 1)
    (late,) = (Path(cfg.inbox) / "_late" / "CT_AI" / study).iterdir()
    assert _refusals(caplog) == [f"group {study} of CT_AI was complete already; 2 late instances kept in {late}, "
                                 "not processed again"]
    assert airflow.runs == {} and rx.pending_groups() == 0
