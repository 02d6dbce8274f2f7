"""The receiver on a bad day: a crash or a full disk between any two steps of a completion, a kill -9
with associations open, a config that lost an AE title, late batches, a slow Airflow, and its limits.
Real associations (pynetdicom as the modality) and, for kill -9, a real ``clara-airflow dicom listen``."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread
from pydicom.uid import generate_uid

from clara_airflow.dicom import groups
from clara_airflow.dicom.receiver import Receiver
from clara_airflow.dicom.trigger import Triggers, records, run_id_for
from tests.dicom_data import ct_series
from tests.unit.dicom.test_receiver import FakeAirflow, Running, config, send, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def gathering(cfg: Any, study: str, tmp_path: Path, called: str = "CT_AI", count: int = 2) -> Path:
    folder = Path(cfg.inbox) / ".clara-receiver" / "groups" / called / study
    folder.mkdir(parents=True)
    for path in ct_series(tmp_path / f"s-{study}", study=study, series=generate_uid(), count=count):
        path.rename(folder / f"{generate_uid()}.dcm")
    return folder


def full(*_: Any, **__: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def _first_trigger_then_full(original: Any) -> Any:
    calls: list[int] = []

    def add(self: Triggers, *args: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            full()
        original(self, *args)
    return add


@pytest.mark.parametrize("step", ["second trigger", "the .complete marker", "the rename into the inbox"])
def test_a_crash_between_any_two_completion_steps_ends_with_one_run_per_pipeline(
        tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    cfg = config(tmp_path, airflow)
    study = generate_uid()
    source = gathering(cfg, study, tmp_path)
    with monkeypatch.context() as fault:
        if step == "second trigger":
            fault.setattr(Triggers, "add", _first_trigger_then_full(Triggers.add))
        elif step == "the .complete marker":
            fault.setattr(groups, "write_file", full)
        else:
            fault.setattr(groups.os, "replace", full)
        rx = Receiver(cfg)
        rx.tick(time.monotonic() + 1)  # the disk is full: the receiver lives, the group keeps gathering
        rx.triggers.flush()
    assert source.is_dir() and not (Path(cfg.inbox) / "CT_AI" / study).exists()
    assert airflow.runs == {}, "no run for a group that is not in the inbox"
    # the disk has room again: the same receiver tries again later ...
    rx.tick(time.monotonic() + 10)
    rx.triggers.flush(time.monotonic() + 10)
    assert set(airflow.runs) == {run_id_for("p1", "CT_AI", study), run_id_for("p2", "CT_AI", study)}
    assert len(list((Path(cfg.inbox) / "CT_AI" / study).glob("*.dcm"))) == 2
    # ... and a restart after that starts nothing again
    again = Receiver(cfg)
    again.tick(time.monotonic() + 10)
    again.triggers.flush(time.monotonic() + 10)
    assert airflow.posts == 2 and records(again.triggers.spool) == []


@pytest.mark.parametrize("step", ["the .complete marker", "the rename into the inbox"])
def test_a_kill_between_completion_steps_is_finished_by_the_next_start(
        tmp_path: Path, airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    cfg = config(tmp_path, airflow)
    study = generate_uid()
    gathering(cfg, study, tmp_path)

    def killed(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt  # the process ends here, as with kill -9: nothing after it runs
    with monkeypatch.context() as fault:
        fault.setattr(groups, "write_file" if step == "the .complete marker" else "fsync_folder", killed)
        with pytest.raises(KeyboardInterrupt):
            Receiver(cfg).tick(time.monotonic() + 1)
    restarted = Receiver(cfg)
    restarted.tick(time.monotonic() + 1)
    restarted.triggers.flush()
    assert set(airflow.runs) == {run_id_for("p1", "CT_AI", study), run_id_for("p2", "CT_AI", study)}
    assert airflow.posts == 2


def test_acknowledged_instances_survive_a_kill_9_with_the_association_open(tmp_path: Path,
                                                                          airflow: FakeAirflow) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    cfg = config(tmp_path, airflow)
    path = tmp_path / "dicom.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    env = {**os.environ, "CLARA_AIRFLOW_USER": "rx", "CLARA_AIRFLOW_PASSWORD": "pw"}
    command = [sys.executable, "-m", "clara_airflow.cli", "dicom", "listen", "--config", str(path)]
    log = tmp_path / "receiver.log"

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: "listening:" in log.read_text(), 20)
        return process

    receiver = start()
    study = generate_uid()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", cfg.listen.port, ae_title="CT_AI")
    statuses = [assoc.send_c_store(dcmread(f)).Status
                for f in ct_series(tmp_path / "s", study=study, series=generate_uid(), count=3)]
    assert statuses == [0, 0, 0]
    receiver.send_signal(signal.SIGKILL)  # the modality was told "stored" three times
    receiver.wait()
    assoc.abort()
    receiver = start()
    try:
        wait_for(lambda: len(airflow.runs) == 2, 20)
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(20)
    assert len(list((Path(cfg.inbox) / "CT_AI" / study).glob("*.dcm"))) == 3
    assert "its 3 acknowledged instances are kept" in log.read_text()


def test_a_removed_ae_title_is_quarantined_and_the_receiver_goes_on(tmp_path: Path, airflow: FakeAirflow,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, airflow)
    old, study = generate_uid(), generate_uid()
    gathering(cfg, old, tmp_path, called="OLD_AI")
    incoming = Path(cfg.inbox) / ".clara-receiver" / "incoming" / "a7" / "OLD_AI" / old
    incoming.mkdir(parents=True)
    ct_series(incoming, study=old, series=generate_uid(), count=1)
    gathering(cfg, study, tmp_path)
    rx = Receiver(cfg)  # the 'KeyError at every start' of the review
    quarantined = Path(cfg.inbox) / ".clara-receiver" / "quarantine" / "OLD_AI" / old
    assert len(list(quarantined.glob("*.dcm"))) == 3, "at the start, before anything completes; nothing is lost"
    rx.tick(time.monotonic() + 1)
    rx.triggers.flush()
    assert set(airflow.runs) == {run_id_for("p1", "CT_AI", study), run_id_for("p2", "CT_AI", study)}
    assert caplog.text.count("which is no longer in ae_titles") == 1
    Receiver(cfg).tick(time.monotonic() + 1)
    assert caplog.text.count("which is no longer in ae_titles") == 1, "logged once, not at every start"
    later = generate_uid()  # one that appears while the receiver runs is moved aside too, not completed
    gathering(cfg, later, tmp_path, called="OLD_AI", count=1)
    rx.complete("OLD_AI", later)
    assert len(list((quarantined.parent / later).glob("*.dcm"))) == 1 and len(airflow.runs) == 2


def test_late_batches_in_the_same_second_are_all_kept(tmp_path: Path, airflow: FakeAirflow) -> None:
    cfg = config(tmp_path, airflow)
    study = generate_uid()
    rx = Receiver(cfg)
    for _ in range(3):  # the first completes the group; two late batches follow at once
        gathering(cfg, study, tmp_path / str(time.monotonic_ns()), count=1)
        rx.complete("CT_AI", study)
    late = list((Path(cfg.inbox) / "_late" / "CT_AI" / study).iterdir())
    assert len(late) == 2 and all(len(list(folder.glob("*.dcm"))) == 1 for folder in late)


def test_one_study_sent_to_two_routed_titles_gets_a_run_per_folder(tmp_path: Path, airflow: FakeAirflow) -> None:
    cfg = config(tmp_path, airflow, ae_titles={"CT_AI": {"pipelines": ["p1"], "timeout": 0.3},
                                               "CT_AI_2": {"pipelines": ["p1"], "timeout": 0.3}})
    rx = Running(cfg)
    study = generate_uid()
    try:
        files = ct_series(tmp_path / "s", study=study, series=generate_uid(), count=1)
        send(cfg, files)
        send(cfg, files, called="CT_AI_2")
        wait_for(lambda: len(airflow.runs) == 2)
    finally:
        rx.close()
    assert {r["conf"]["clara_payload"] for r in airflow.runs.values()} == {
        str(Path(cfg.inbox) / title / study) for title in ("CT_AI", "CT_AI_2")}


def test_a_slow_airflow_never_holds_up_receiving(tmp_path: Path, airflow: FakeAirflow) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    airflow.delay = 3.0
    cfg = config(tmp_path, airflow, ae_titles={"CT_AI": {"pipelines": ["p1"], "timeout": 0.2}})
    rx = Running(cfg)
    try:
        first, second = generate_uid(), generate_uid()
        send(cfg, ct_series(tmp_path / "a", study=first, series=generate_uid(), count=1))
        wait_for(lambda: airflow.posts == 1)  # its trigger now waits 3 s for Airflow
        began = time.monotonic()
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", cfg.listen.port, ae_title="CLARA")
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        send(cfg, ct_series(tmp_path / "b", study=second, series=generate_uid(), count=1))
        wait_for(lambda: (Path(cfg.inbox) / "CT_AI" / second / ".complete").exists(), 2.5)
        assert time.monotonic() - began < 2.5, "echo, store and completion went on while a trigger waited"
        wait_for(lambda: len(airflow.runs) == 2, 10)
    finally:
        rx.close()


def test_associations_above_the_limit_are_refused_and_logged(tmp_path: Path, airflow: FakeAirflow,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    cfg = config(tmp_path, airflow, max_associations=1)
    rx = Running(cfg)
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        held = ae.associate("127.0.0.1", cfg.listen.port, ae_title="CT_AI")
        assert held.is_established
        refused = send(cfg, ct_series(tmp_path / "s", study=generate_uid(), series=generate_uid(), count=1))
        assert refused.is_rejected and refused.acceptor.primitive.result == 0x02, "transient: the sender retries"
        held.release()
    finally:
        rx.close()
    assert "reason=1 associations are open, the limit is max_associations 1" in caplog.text


def test_an_instance_above_max_instance_mb_is_refused(tmp_path: Path, airflow: FakeAirflow,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, airflow, max_instance_mb=1)
    rx = Running(cfg)
    try:
        big = ct_series(tmp_path / "big", study=generate_uid(), series=generate_uid(), count=1, size=800)
        small = ct_series(tmp_path / "small", study=generate_uid(), series=generate_uid(), count=1)
        assert send(cfg, big + small) == [0xA700, 0]
    finally:
        rx.close()
    assert "sent 1 MiB in one instance, above max_instance_mb 1" in caplog.text
    assert not any((Path(cfg.inbox) / ".clara-receiver" / "tmp").iterdir()), "nothing of it is left"


def test_a_run_starts_as_soon_as_its_group_is_in_the_inbox(tmp_path: Path, airflow: FakeAirflow) -> None:
    """The trigger is on disk before the group is visible, so the sender first finds it not ready; the
    completion wakes it, rather than a retry a second later."""
    cfg = config(tmp_path, airflow, ae_titles={"CT_AI": {"pipelines": ["p1"], "timeout": 0.2}})
    rx = Running(cfg)
    try:
        for n in range(3):
            study = generate_uid()
            send(cfg, ct_series(tmp_path / str(n), study=study, series=generate_uid(), count=1))
            marker = Path(cfg.inbox) / "CT_AI" / study / ".complete"
            wait_for(marker.exists, 5)
            seen = time.monotonic()
            wait_for(lambda n=n: len(airflow.runs) == n + 1, 5)
            assert time.monotonic() - seen < 0.5
    finally:
        rx.close()
