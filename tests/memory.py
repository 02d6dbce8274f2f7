"""An in-memory Variable store for tests of the record, lease and stop logic."""

from __future__ import annotations

import threading
import time


class MemoryStore:
    """What ``VariableStore`` promises, and no more: get, set, delete, keys; no compare-and-set.

    :param delay: seconds each ``get`` waits, so concurrent read-modify-write cycles interleave.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0
        self.delay = delay
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self.data.get(key)
        if self.delay:
            time.sleep(self.delay)
        return value

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self.writes += 1
            self.data[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return [k for k in self.data if k.startswith(prefix)]
