"""The receiver's status port (``listen.status_port``): ``GET /health`` and ``GET /metrics``.

``/health`` answers 200 while the C-STORE SCP accepts associations and the trigger thread runs, else
503, with a JSON body of the same facts as ``clara-airflow dicom status`` (without asking Airflow).
``/metrics`` is Prometheus text (``prometheus_client``), every name starting with ``clara_dicom_``.
Both need ``Authorization: Bearer <token>``, the token read from the environment variable that
``listen.status_token_env`` names: the body names AE titles and study UIDs. The port binds 127.0.0.1
unless ``listen.status_host`` says otherwise.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StatusServer", "collector", "refusal_reason", "start_status"]

log = logging.getLogger("clara_airflow.dicom")


def refusal_reason(text: str) -> str:
    """The ``reason`` label of a refused association, from the receiver's own refusal text."""
    for word, reason in (("not configured", "called_ae"), ("not in sources", "source"), ("MiB free", "disk"),
                         ("associations are open", "associations")):
        if word in text:
            return reason
    return "other"


def collector(receiver: Any) -> Any:
    """A prometheus_client collector that reads the receiver's counters at each scrape."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            counts, sent = receiver.counts, receiver.triggers.counts
            for name, key, what in (
                    ("instances_stored", "instances", "instances written to disk and acknowledged"),
                    ("bytes_received", "bytes", "bytes of acknowledged instances"),
                    ("groups_completed", "completed", "groups moved into the inbox with their runs"),
                    ("groups_routed", "routed", "complete groups that started at least one run"),
                    ("groups_unrouted", "unrouted", "complete groups no rule routed (kept, no run)")):
                yield CounterMetricFamily(f"clara_dicom_{name}", what, value=counts[key])
            for name, key, what in (("triggers_sent", "sent", "runs started in Airflow (or found existing)"),
                                    ("triggers_failed", "failed", "runs Airflow refused for good (400/403/404/422)"),
                                    ("triggers_retried", "retried", "sends that failed and will be tried again")):
                yield CounterMetricFamily(f"clara_dicom_{name}", what, value=sent[key])
            refused = CounterMetricFamily("clara_dicom_associations_refused", "associations refused, by reason",
                                          labels=["reason"])
            for reason in ("called_ae", "source", "disk", "associations", "other"):
                refused.add_metric([reason], counts[f"refused:{reason}"])
            yield refused
            yield GaugeMetricFamily("clara_dicom_groups_pending", "groups still gathering",
                                    value=receiver.pending_groups())
            yield GaugeMetricFamily("clara_dicom_triggers_pending", "runs waiting to be started in Airflow",
                                    value=len(receiver.triggers.pending()))
            yield GaugeMetricFamily("clara_dicom_disk_free_bytes", "free space of the inbox's filesystem",
                                    value=shutil.disk_usage(receiver.inbox).free)

    return Collector()


class StatusServer:
    """Serves ``/health`` and ``/metrics`` from a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, token: str, receiver: Any, checks: Callable[[], dict[str, bool]],
                 facts: Callable[[], dict[str, Any]]) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector(receiver))
        expected = f"Bearer {token}".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    self._answer(401, b'{"error": "a bearer token is required (listen.status_token_env)"}',
                                 "application/json", {"WWW-Authenticate": "Bearer"})
                elif self.path == "/health":
                    state = checks()
                    body = {"status": "ok" if all(state.values()) else "unhealthy", "checks": state, **facts()}
                    self._answer(200 if all(state.values()) else 503, json.dumps(body).encode(), "application/json")
                elif self.path == "/metrics":
                    self._answer(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._answer(404, b'{"error": "GET /health or /metrics"}', "application/json")

            def _answer(self, code: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for name, value in {"Content-Type": kind, "Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status port: " + format, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="clara-status", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_status(config: Any, receiver: Any, sender: threading.Thread) -> StatusServer | None:
    """The status port of ``config.listen``, if set; the SCP counts as accepting while pynetdicom's
    acceptor thread runs.

    :raises ClaraAirflowError: the token's environment variable is not set (never serve without one).
    """
    from clara_airflow.dicom.status import status
    from clara_airflow.errors import ClaraAirflowError

    listen = config.listen
    if listen.status_port is None:
        return None
    token = os.environ.get(listen.status_token_env, "")
    if len(token) < 16:
        raise ClaraAirflowError(f"listen.status_port is set, but the environment variable {listen.status_token_env} "
                                "(listen.status_token_env) does not hold a token of at least 16 characters; "
                                "/health and /metrics need it as 'Authorization: Bearer <token>'")

    def checks() -> dict[str, bool]:
        acceptor = any(t.name.startswith("AcceptorServer@") and t.is_alive() for t in threading.enumerate())
        return {"scp": acceptor, "triggers": sender.is_alive()}

    server = StatusServer(listen.status_host, listen.status_port, token, receiver, checks,
                          lambda: status(config, airflow=False))
    log.info("status port: http://%s:%d/health and /metrics", listen.status_host, server.port)
    return server
