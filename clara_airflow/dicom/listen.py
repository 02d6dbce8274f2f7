"""``clara-airflow dicom listen``: the receiver's threads. The SCP runs in pynetdicom's threads, group
completion in the calling one, triggers in their own, and the status port (if set) in its own."""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

from clara_airflow.dicom import reactor
from clara_airflow.dicom.config import DicomConfig
from clara_airflow.dicom.health import start_status
from clara_airflow.dicom.receiver import _SUCCESS, Receiver
from clara_airflow.dicom.status import check_dags
from clara_airflow.dicom.trigger import Triggers

__all__ = ["serve"]

log = logging.getLogger("clara_airflow.dicom")


def serve(config: DicomConfig, *, stop: threading.Event | None = None, tick: float = 0.2,
          receiver: Receiver | None = None) -> Receiver:
    """Listen until ``stop`` is set (forever without one): the SCP in pynetdicom's threads, group
    completion in this one, triggers in their own."""
    from pynetdicom import AE, _config, evt
    from pynetdicom.presentation import AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    rx = receiver or Receiver(config)
    done = stop or threading.Event()
    sender = threading.Thread(target=_send_loop, args=(config, rx.triggers, done), name="clara-triggers",
                              daemon=True)
    status_port = start_status(config, rx, sender)  # first: a missing token stops the start, not a running receiver
    _config.STORE_RECV_CHUNKED_DATASET = True  # every instance goes to a file as it arrives
    before, tempfile.tempdir = tempfile.tempdir, str(rx.folders.tmp)  # that file: on the inbox's filesystem
    ae = AE(ae_title=config.listen.ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = config.max_pdu
    ae.maximum_associations = config.max_associations + 8  # the receiver refuses first, and logs why
    reactor.install()  # pynetdicom's 1 ms polls, twice per instance: see dicom/reactor.py

    def store(event: Any) -> int:
        reactor.busy(event.assoc)
        return rx.on_store(event)

    handlers: list[Any] = [(evt.EVT_REQUESTED, rx.on_requested), (evt.EVT_C_STORE, store),
                           (evt.EVT_RELEASED, rx.on_released), (evt.EVT_ABORTED, rx.on_aborted),
                           (evt.EVT_C_ECHO, lambda event: _SUCCESS), (evt.EVT_CONN_OPEN, reactor.on_open)]
    server = ae.start_server((config.listen.host, config.listen.port), block=False, evt_handlers=handlers)
    log.info("listening: ae_title=%s address=%s:%d inbox=%s routes=%s", config.listen.ae_title, config.listen.host,
             config.listen.port, config.inbox, ",".join(f"{k}->{'+'.join(v.every_pipeline())}"
                                                          for k, v in config.ae_titles.items()))
    assert server is not None  # start_server(block=False) returns the running server
    sender.start()
    try:
        while not done.wait(tick):
            rx.tick()
    finally:
        server.shutdown()
        if status_port is not None:
            status_port.close()
        rx.triggers.wake()
        sender.join(15)
        tempfile.tempdir = before
    return rx


def _send_loop(config: DicomConfig, triggers: Triggers, stop: threading.Event) -> None:
    check_dags(config, triggers.client)
    triggers.run(stop)
