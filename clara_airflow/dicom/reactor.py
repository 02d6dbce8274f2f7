"""Shorter polls in pynetdicom's threads, for the receiver.

pynetdicom (3.0) moves every message between two polling threads: the association's reactor sleeps
1 ms at each turn of its loop (``time.sleep(0.001)`` in ``Association._run_reactor``), and the DUL
sleeps ``_run_loop_delay`` (1 ms) whenever it finds nothing to do. A C-STORE waits on both: the
reactor to notice the decoded request, the DUL to notice the response, so every instance waited 1 to
2 ms for nothing, about a quarter of the receiver's time per 0.5 MB CT slice. ``scripts/bench_dicom.py``
measured 0.70x Orthanc's rate before and 0.84x after (docs/dicom.md, "Performance").

:func:`install` makes the reactor's 1 ms sleep :data:`POLL`, and the DUL's idle delay with it, while an
association is *busy* (it had a message in the last :data:`BUSY` seconds: :func:`busy`, called for each
instance, and :func:`on_open`); every other sleep of that module is kept. Polling every 0.1 ms costs
about a fifth of a core per open association, so an idle one (a PACS that keeps its association open)
goes back to pynetdicom's 1 ms at once: measured in docs/dicom.md. The check that the pinned
pynetdicom still sleeps where this expects is ``tests/unit/dicom/test_reactor.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["BUSY", "POLL", "busy", "install", "on_open"]

POLL = 0.0001  # seconds, while an association is busy
BUSY = 0.5  # seconds after its last message that an association counts as busy
_REACTOR_SLEEP = 0.001  # what pynetdicom's association reactor sleeps at each turn (and its DUL when idle)
_lock = threading.Lock()


class _ShortSleeps:
    """Stands for the ``time`` module inside ``pynetdicom.association``: the same, but its 1 ms reactor
    sleep, which is :data:`POLL` while the association (the calling thread: pynetdicom's ``Association``
    is a thread) is busy; its DUL's idle delay follows. Idle, both are pynetdicom's own again."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def sleep(self, seconds: float) -> None:
        if seconds == _REACTOR_SLEEP:
            assoc = threading.current_thread()
            busy = self.real.monotonic() < getattr(assoc, "_clara_busy_until", 0.0)
            seconds = POLL if busy else _REACTOR_SLEEP
            dul = getattr(assoc, "dul", None)
            if dul is not None:
                dul._run_loop_delay = seconds
        self.real.sleep(seconds)


def install() -> None:
    """Shorten the association reactor's poll (once per process)."""
    import pynetdicom.association as association

    with _lock:
        current = getattr(association, "time")  # noqa: B009 - the module's own reference to time
        if not isinstance(current, _ShortSleeps):
            setattr(association, "time", _ShortSleeps(current))  # noqa: B010


def busy(assoc: Any) -> None:
    """``assoc`` has just had a message: poll it quickly for the next :data:`BUSY` seconds."""
    assoc._clara_busy_until = time.monotonic() + BUSY
    assoc.dul._run_loop_delay = POLL


def on_open(event: Any) -> None:
    """``EVT_CONN_OPEN``: a new association is busy (its negotiation and first instance are quick)."""
    busy(event.assoc)
