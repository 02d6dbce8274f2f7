"""A Kubernetes API without a cluster: kmock's emulator (pinned 0.8) with the defaulting and the
validation a real API server does (tests/kube/admission.py), and Pod Security "restricted" admission
in the namespaces given, served on 127.0.0.1 from a background event loop. Test code only."""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import parsing as _parsing  # private API: kmock is pinned to 0.8

_original_guess = _parsing.guess_k8s


def _guess(k8s: Any, method: Any, query: Any) -> Any:
    """The kubernetes client sends ``watch=True``; kmock understands only ``watch=true``."""
    if str(query.get("watch", "")).lower() in ("true", "1"):
        query = dict(query, watch="true")
    return _original_guess(k8s, method, query)


_parsing.guess_k8s = _guess
RESOURCES = ("v1/pods", "v1/events", "v1/services", "v1/persistentvolumeclaims", "apps/v1/deployments",
             "v1/namespaces")


def _refusal(code: int, reason: str, message: str) -> Any:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


class DefaultingEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """Adds what a real API server fills in on create (uid, timestamps, namespace, initial status), and
    refuses what it refuses: invalid objects (422), and pods that break Pod Security "restricted" in
    the namespaces of ``restricted`` (403; a Deployment's pods are refused by its ReplicaSet instead)."""

    restricted: frozenset[str] = frozenset()

    async def _handle(self, request: Any) -> Any:
        from tests.kube.admission import problems_of, restricted_problems

        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            kind = str(request.resource).rsplit("/", 1)[-1]
            name = (request.data.get("metadata") or {}).get("name", "")
            invalid = problems_of(kind, request.data, restricted=False)
            if invalid:
                return _refusal(422, "Invalid", f"{kind} {name!r} is invalid: {'; '.join(invalid)}")
            if kind == "pods" and (request.namespace or "default") in self.restricted:
                refused = restricted_problems(request.data.get("spec") or {})
                if refused:
                    return _refusal(403, "Forbidden", f'pods "{name}" is forbidden: violates PodSecurity '
                                    f'"restricted:latest": {"; ".join(refused)}')
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("namespace", request.namespace or "default")
            kind = str(request.resource)
            if "pods" in kind:
                request.data.setdefault("status", {"phase": "Pending"})
            elif "deployments" in kind:
                request.data.setdefault("status", {"replicas": 0, "readyReplicas": 0})
        return await super()._handle(request)


class FakeCluster:
    """Start with ``with FakeCluster(folder) as cluster``; ``cluster.kubeconfig`` points clients at it."""

    def __init__(self, folder: Path, restricted: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.restricted = frozenset(restricted)
        self.logs: dict[tuple[str, str], bytes] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        self.kubeconfig = self.folder / "kubeconfig.yaml"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: tester, user: {}}]\n"
            "contexts: [{name: kmock, context: {cluster: kmock, user: tester, namespace: default}}]\n"
            "current-context: kmock\n")
        return self

    async def _start(self) -> str:
        self.emulator = DefaultingEmulator()
        self.emulator.restricted = self.restricted
        for resource in RESOURCES:
            self.emulator.resources[resource] = {}
        self.emulator["get", kmock.resource("v1/pods"), kmock.subresource("log")] << kmock.headers(
            {"Content-Type": "text/plain"}) << (lambda req: self.logs.get((req.namespace, req.name), b""))
        await self.emulator.__aenter__()
        self.server = kmock.Server(self.emulator)
        await self.server.__aenter__()
        return str(self.server.url).rstrip("/")

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            await self.server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
