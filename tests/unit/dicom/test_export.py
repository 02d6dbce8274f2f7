"""The register-results export's sender against real associations (a pynetdicom SCP in this process):
what it sends, its retries and back-off, and errors that name the destination and the DICOM status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from clara_airflow.dicom.config import Destination
from clara_airflow.dicom.export import dicom_files, send_files
from clara_airflow.errors import ClaraAirflowError
from tests.dicom_data import ct_series
from tests.unit.dicom.test_receiver import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Scp:
    def __init__(self, status: int) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.status, self.received, self.port = status, [], free_port()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: Any) -> int:
        if self.status == 0:
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
    assert found == files
    result = send_files(found, "MYPACS", Destination(host="127.0.0.1", port=scp.port, ae_title="PACS"))
    assert (result.instances, result.attempts) == (3, 1) and len(scp.received) == 3


@pytest.mark.parametrize("scp", [0xA700], indirect=True)
def test_a_refused_instance_is_retried_then_named_with_its_status(tmp_path: Path, scp: Scp) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=2)
    waits: list[float] = []
    with pytest.raises(ClaraAirflowError) as err:
        send_files(files, "MYPACS", Destination(host="127.0.0.1", port=scp.port, ae_title="PACS"), sleep=waits.append)
    assert waits == [2.0, 4.0], "3 tries with back-off"
    assert str(err.value).startswith(f"destination MYPACS (PACS@127.0.0.1:{scp.port}): C-STORE of ")
    assert "answered DICOM status 0xA700; 2 of 2 instances were not stored after 3 tries" in str(err.value)


def test_an_unreachable_destination_is_named(tmp_path: Path) -> None:
    files = ct_series(tmp_path, study=generate_uid(), series=generate_uid(), count=1)
    port = free_port()
    with pytest.raises(ClaraAirflowError, match=f"destination ARCHIVE \\(A@127.0.0.1:{port}\\): no association"):
        send_files(files, "ARCHIVE", Destination(host="127.0.0.1", port=port, ae_title="A"), sleep=lambda _: None)
