"""The receiver's shorter pynetdicom polls (clara_airflow/dicom/reactor.py): the pinned pynetdicom
still sleeps where the shim expects, only that sleep changes, and a real association gets the DUL delay."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest

from clara_airflow.dicom import reactor


def test_the_pinned_pynetdicom_polls_where_the_shim_expects() -> None:
    """A pynetdicom upgrade that moves these polls must fail here, not silently lose the speed."""
    import pynetdicom.association as association
    import pynetdicom.dul as dul

    assert "time.sleep(0.001)" in inspect.getsource(association.Association._run_reactor)
    assert "self._run_loop_delay = 0.001" in inspect.getsource(dul.DULServiceProvider.__init__)
    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(dul.DULServiceProvider.run_reactor)


def test_only_a_busy_associations_one_millisecond_sleep_is_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynetdicom.association as association

    monkeypatch.setattr(association, "time", time)  # undone after the test
    reactor.install()
    reactor.install()  # once per process: a second call wraps nothing again
    shim = association.time
    assert isinstance(shim, reactor._ShortSleeps) and shim.real is time
    slept: list[float] = []
    clock = [100.0]
    monkeypatch.setattr(shim, "real", type("T", (), {"sleep": staticmethod(slept.append),
                                                     "monotonic": staticmethod(lambda: clock[0])}))

    class Assoc(threading.Thread):  # pynetdicom's Association is the reactor's thread
        dul = type("Dul", (), {"_run_loop_delay": 0.001})()

        def run(self) -> None:
            shim.sleep(0.001)  # idle: pynetdicom's own poll
            reactor.busy(self)  # an instance arrived (busy() reads the real clock: 0.5 s from now)
            self._clara_busy_until = clock[0] + reactor.BUSY
            assert self.dul._run_loop_delay == reactor.POLL
            shim.sleep(0.001)
            shim.sleep(0.01)  # any other sleep of the module is kept
            shim.sleep(0.0001)
            clock[0] += reactor.BUSY + 0.01  # quiet for longer than BUSY: idle again, DUL too
            shim.sleep(0.001)

    thread = Assoc()
    thread.start()
    thread.join()
    assert slept == [0.001, reactor.POLL, 0.01, 0.0001, 0.001]
    assert thread.dul._run_loop_delay == 0.001


def test_a_real_association_runs_with_the_short_dul_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynetdicom.association as association
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    monkeypatch.setattr(association, "time", time)
    reactor.install()
    seen: list[float] = []
    scp = AE(ae_title="SCP")
    scp.add_supported_context(Verification)

    def echo(event: Any) -> int:
        seen.append(event.assoc.dul._run_loop_delay)
        return 0x0000

    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_CONN_OPEN, reactor.on_open), (evt.EVT_C_ECHO, echo)])
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1])
        assert assoc.is_established
        status = assoc.send_c_echo()
        assoc.release()
        assert status.Status == 0x0000 and seen == [reactor.POLL]
    finally:
        server.shutdown()
    assert threading.active_count() < 50
