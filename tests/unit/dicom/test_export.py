"""The register-results export's sender against real associations (a pynetdicom SCP in this process):
what it sends (only regular DICOM files the pipeline wrote, in their own transfer syntax), its retries
and back-off (a lost association included, never resending what was stored), and errors that name the
destination and the DICOM status."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from clara_airflow.dicom.config import Destination
from clara_airflow.dicom.export import SendError, dicom_files, send_files
from clara_airflow.errors import ClaraAirflowError
from tests.dicom_data import ct_series
from tests.unit.dicom.test_receiver import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Scp:
    """A PACS: answers ``status``; ``abort_after`` aborts the first association after that many stores
    (a lost connection); ``syntaxes`` it accepts (default: pynetdicom's uncompressed ones)."""

    def __init__(self, status: int, *, abort_after: int | None = None, syntaxes: list[str] | None = None) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.status, self.received, self.port, self.abort_after = status, [], free_port(), abort_after
        self.callers: list[str] = []
        self.dropping: Any = None  # the association being aborted
        self.refuse: set[str] = set()  # SOP instance UIDs answered 0xA700 every time
        ae = AE(ae_title="PACS")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes or context.transfer_syntax)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: Any) -> int:
        self.callers.append(event.assoc.requestor.ae_title)
        if str(event.request.AffectedSOPInstanceUID) in self.refuse:
            return 0xA700
        if event.assoc is self.dropping:  # stored or not, no answer reaches the sender: not counted as stored
            return 0xA700
        if self.abort_after is not None and len(self.received) == self.abort_after:
            self.abort_after, self.dropping = None, event.assoc
            threading.Timer(0.05, event.assoc.abort).start()  # the link drops before this instance is answered
            return 0xA700
        if self.status in (0, 0xB000, 0xB006, 0xB007):  # success, or a warning: stored
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status


@pytest.fixture
def scp(request: pytest.FixtureRequest) -> Iterator[Scp]:
    server = Scp(getattr(request, "param", 0))
    yield server
    server.server.shutdown()


def test_every_dicom_file_of_the_inputs_is_sent(tmp_path: Path, scp: Scp) -> None:
    files = ct_series(tmp_path / "out" / "series", study=generate_uid(), series=generate_uid(), count=3)
    (tmp_path / "out" / "notes.txt").write_text("not DICOM")
    found = dicom_files([tmp_path / "out"])
    assert found.files == files and found.not_dicom == 1 and found.skipped == 1
    result = send_files(found.files, "MYPACS", Destination(host="127.0.0.1", port=scp.port, ae_title="PACS"))
    assert (result.instances, result.attempts) == (3, 1) and len(scp.received) == 3


def test_only_regular_files_the_pipeline_wrote_are_found(tmp_path: Path) -> None:
    """A step may write links (to another patient's files on the host) and FIFOs: none is sent or opened."""
    elsewhere = ct_series(tmp_path / "host-pacs", study=generate_uid(), series=generate_uid(), count=2)
    out = tmp_path / "out"
    mine = ct_series(out / "series", study=generate_uid(), series=generate_uid(), count=1)
    (out / "linked.dcm").symlink_to(elsewhere[0])
    (out / "series" / "deep-link.dcm").symlink_to(elsewhere[1])
    (out / "linked-folder").symlink_to(tmp_path / "host-pacs")
    os.mkfifo(out / "pipe.dcm")  # opening it for reading would block until the step timeout
    (tmp_path / "out-link").symlink_to(out)
    found = dicom_files([out])
    assert found.files == mine
    assert sorted(found.links) == sorted(str(p) for p in (out / "linked.dcm", out / "series" / "deep-link.dcm",
                                                          out / "linked-folder"))
    assert found.special == [str(out / "pipe.dcm")] and found.skipped == 4
    assert dicom_files([tmp_path / "out-link"]).files == [], "an input folder that is a link is not walked"


@pytest.mark.parametrize("syntax", [RLELossless, JPEGBaseline8Bit, JPEG2000Lossless])
def test_compressed_files_are_sent_in_their_own_transfer_syntax(tmp_path: Path, syntax: str) -> None:
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=2, syntax=syntax)
    files += ct_series(tmp_path / "plain", study=generate_uid(), series=generate_uid(), count=1)
    server = Scp(0, syntaxes=ALL_TRANSFER_SYNTAXES)
    try:
        result = send_files(files, "MYPACS", Destination(host="127.0.0.1", port=server.port, ae_title="PACS"))
    finally:
        server.server.shutdown()
    assert result.instances == 3 and len(server.received) == 3


def test_a_lost_association_is_retried_and_nothing_is_sent_twice(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=5)
    server = Scp(0, abort_after=2)
    waits: list[float] = []
    try:
        result = send_files(files, "MYPACS", Destination(host="127.0.0.1", port=server.port, ae_title="PACS"),
                            sleep=waits.append, timeout=3)
    finally:
        server.server.shutdown()
    assert result.attempts == 2 and waits == [2.0]
    assert re.search(r"try 1 of 3: (no answer to C-STORE \(connection lost or timed out\)|C-STORE of \S+ answered "
                     r"DICOM status 0xA700); [23] of 5 instances not stored yet", caplog.text)
    assert sorted(server.received) == sorted({str(dcmread(f).SOPInstanceUID) for f in files})


@pytest.mark.parametrize("scp", [0xA700], indirect=True)
def test_a_refused_instance_is_retried_then_named_with_its_status(tmp_path: Path, scp: Scp) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=2)
    waits: list[float] = []
    with pytest.raises(ClaraAirflowError) as err:
        send_files(files, "MYPACS", Destination(host="127.0.0.1", port=scp.port, ae_title="PACS"), sleep=waits.append)
    assert waits == [2.0, 4.0], "3 tries with back-off"
    assert len(scp.callers) == 6, "each try offers both instances again, and there are 3 tries"
    assert str(err.value).startswith(f"destination MYPACS (PACS@127.0.0.1:{scp.port}): C-STORE of ")
    assert "answered DICOM status 0xA700; 2 of 2 instances were not stored after 3 tries" in str(err.value)


def test_what_was_stored_is_counted_when_one_instance_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=3)
    server = Scp(0)
    server.refuse.add(str(dcmread(files[1]).SOPInstanceUID))
    try:
        with pytest.raises(SendError) as err:
            send_files(files, "MYPACS", Destination(host="127.0.0.1", port=server.port, ae_title="PACS"),
                       sleep=lambda _: None)
    finally:
        server.server.shutdown()
    assert (err.value.sent, err.value.failed) == (2, 1)
    assert "; 1 of 3 instances were not stored after 3 tries" in str(err.value)
    assert sorted(server.received) == sorted(str(dcmread(f).SOPInstanceUID) for f in files if f != files[1])
    ours = [r for r in caplog.records if r.name.startswith("clara_airflow")]  # pynetdicom may log here too
    assert [r.name for r in ours] == ["clara_airflow.dicom"] * 3
    assert ours[0].message.startswith("destination MYPACS (PACS@127.0.0.1:")
    assert "try 1 of 3: C-STORE of" in ours[0].message and "1 of 3 instances not stored yet" in caplog.text


def test_a_file_that_breaks_the_sender_is_an_error_inside_the_retries(tmp_path: Path) -> None:
    (path,) = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=1)
    path.write_bytes(path.read_bytes()[:140])  # DICM, then a cut header
    with pytest.raises(SendError, match=r"MYPACS .*: \w+Error: .*; 1 of 1 instances were not stored after 3 tries"):
        send_files([path], "MYPACS", Destination(host="127.0.0.1", port=free_port(), ae_title="PACS"),
                   sleep=lambda _: None)


def test_the_time_taken_is_reported(tmp_path: Path, scp: Scp) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=1)
    result = send_files(files, "MYPACS", Destination(host="127.0.0.1", port=scp.port, ae_title="PACS"))
    assert 0 < result.seconds < 30


def test_an_unreachable_destination_is_named(tmp_path: Path) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=1)
    port = free_port()
    with pytest.raises(ClaraAirflowError, match=f"destination ARCHIVE \\(A@127.0.0.1:{port}\\): no association"):
        send_files(files, "ARCHIVE", Destination(host="127.0.0.1", port=port, ae_title="A"), sleep=lambda _: None)


@pytest.mark.parametrize("status", [0xB000, 0xB006, 0xB007])
def test_a_warning_status_counts_as_stored(tmp_path: Path, status: int) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=2)
    server = Scp(status)
    try:
        result = send_files(files, "MYPACS", Destination(host="127.0.0.1", port=server.port, ae_title="PACS"))
    finally:
        server.server.shutdown()
    assert (result.instances, result.attempts) == (2, 1) and server.callers == ["CLARA", "CLARA"]


def test_what_is_skipped_is_counted_and_the_walk_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (tmp_path / "elsewhere").mkdir()
    first.symlink_to(tmp_path / "elsewhere")
    mine = ct_series(second, study=generate_uid(), series=generate_uid(), count=2)
    (second / "notes.txt").write_text("x")
    (second / "report.pdf").write_bytes(b"%PDF")
    vanished = second / "0000.dcm"
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p: (_ for _ in ()).throw(FileNotFoundError(p)) if Path(p) == vanished
                        else real_lstat(p))  # deleted between the listing and the look
    found = dicom_files([first, second])
    assert found.links == [str(first)] and found.not_dicom == 2 and found.files == mine[1:]


def test_the_open_itself_refuses_links_and_never_blocks(tmp_path: Path) -> None:
    """Between the look (lstat) and the open a step could swap a file for a link or a FIFO."""
    from clara_airflow.dicom.export import _is_part10

    (target,) = ct_series(tmp_path / "host", study=generate_uid(), series=generate_uid(), count=1)
    (tmp_path / "link.dcm").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.dcm")
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.extend(
        [_is_part10(tmp_path / "link.dcm"), _is_part10(tmp_path / "fifo.dcm"), _is_part10(target)]), daemon=True)
    worker.start()
    worker.join(5)
    assert result == [None, None, True]


def test_more_pairs_than_one_association_holds_are_sent_over_several(tmp_path: Path) -> None:
    from pydicom import dcmread as read
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AllStoragePresentationContexts

    from clara_airflow.dicom.export import MAX_CONTEXTS

    files = []
    classes = [c.abstract_syntax for c in AllStoragePresentationContexts][:66]
    for n, (sop_class, syntax) in enumerate((c, s) for c in classes for s in (ExplicitVRLittleEndian,
                                                                              ImplicitVRLittleEndian)):
        (path,) = ct_series(tmp_path / str(n), study=generate_uid(), series=generate_uid(), count=1, size=2)
        ds = read(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    assert len(files) > MAX_CONTEXTS == 128
    server = Scp(0)
    try:
        result = send_files(files, "MYPACS", Destination(host="127.0.0.1", port=server.port, ae_title="PACS"))
    finally:
        server.server.shutdown()
    assert result.instances == len(server.received) == 132


def test_a_destination_that_refuses_the_association_is_named(tmp_path: Path) -> None:
    from pynetdicom import AE, AllStoragePresentationContexts

    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=1)
    ae, port = AE(ae_title="PACS"), free_port()
    ae.supported_contexts = AllStoragePresentationContexts
    ae.require_called_aet = True
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(SendError, match=r"\(WRONG@127.0.0.1:\d+\): association rejected; 1 of 1 instances"):
            send_files(files, "MYPACS", Destination(host="127.0.0.1", port=port, ae_title="WRONG"),
                       sleep=lambda _: None)
    finally:
        server.shutdown()
