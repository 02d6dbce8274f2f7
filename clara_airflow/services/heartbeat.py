"""While a step container runs, refresh ``last_used`` of the services it uses (clara-pdl 7.4: every 60 s).

Leases already keep a held service from the reaper; the heartbeat keeps ``last_used`` truthful for
people reading the services page, and for a lease lost to an operator's mistake. It runs in a
daemon thread of the step task. The Task SDK's socket channel serializes requests from several
threads with a lock (``CommsDecoder._thread_lock``), so Variable writes from this thread are safe
in a worker; the thread is always stopped and joined before the step's ``execute`` returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from clara_airflow.services.records import VariableStore, touch, variable_store


class ServiceHeartbeat:
    """Context manager: ``with ServiceHeartbeat(ids, 60, log): run the container``.

    A failed refresh, whatever it raises, is retried at the next beat and never fails the step; each kind
    of error (its type) is logged once as a warning, repeats at debug level, so a database outage of an
    hour does not flood the step's log.
    """

    def __init__(self, service_ids: Sequence[str], interval: float, log: Any, *, dag_id: str = "",
                 store: VariableStore | None = None,
                 refresh: Callable[[str, str, VariableStore], None] = touch) -> None:
        self.service_ids = sorted(set(service_ids))
        self.dag_id = dag_id
        self.interval = interval
        self.log = log
        self.store = store
        self.refresh = refresh
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures: dict[str, int] = {}  # error type -> failed refreshes

    def __enter__(self) -> ServiceHeartbeat:
        if self.service_ids and self.interval > 0:
            self.store = self.store or variable_store()
            self._thread = threading.Thread(target=self._run, name="clara-service-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        assert self.store is not None
        while not self._stop.wait(self.interval):
            for sid in self.service_ids:
                try:
                    self.refresh(sid, self.dag_id, self.store)
                except BaseException as exc:
                    self._failed(sid, exc)
            self.beats += 1

    def _failed(self, sid: str, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.failures[kind] = self.failures.get(kind, 0) + 1
        first = self.failures[kind] == 1
        (self.log.warning if first else self.log.debug)(
            "could not refresh last_used of clara-svc-%s (%s: %s)%s", sid, kind, exc,
            "; retried every beat, further errors of this kind are logged at debug level" if first else "")
