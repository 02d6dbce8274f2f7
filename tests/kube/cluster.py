"""A Kubernetes API without a cluster: kmock's emulator (pinned 0.8) with the defaulting and the
validation a real API server does (tests/kube/admission.py), and Pod Security "restricted" admission
in the namespaces given, served on 127.0.0.1 from a background event loop. Test code only."""

from __future__ import annotations

import asyncio
import datetime
import re
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
             "v1/namespaces", "storage.k8s.io/v1/storageclasses")
CLUSTER_SCOPED = ("namespaces", "storageclasses")


def _refusal(code: int, reason: str, message: str) -> Any:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


# What the API server's own OpenAPI schema says, in strict mode (an unknown field is an error: a real
# API server drops it silently, or refuses it with fieldValidation=Strict), for the oldest and newest
# Kubernetes versions we support.
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")
_KINDS = {"pods": ("v1", "Pod"), "services": ("v1", "Service"), "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
          "deployments": ("apps/v1", "Deployment"), "events": ("v1", "Event"),
          "storageclasses": ("storage.k8s.io/v1", "StorageClass"), "namespaces": ("v1", "Namespace")}


def schema_problems(kind: str, obj: dict[str, Any]) -> list[str]:
    """Where ``obj`` (a ``kind``: pods, deployments, ...) breaks the API schema, strictly; [] when nowhere."""
    import kubernetes_validate

    if kind not in _KINDS:  # the fake refuses what it cannot check
        return [f"the fake cluster knows no schema of {kind}: add it to tests/kube/cluster.py _KINDS"]
    api_version, name = _KINDS[kind]
    body = {"apiVersion": api_version, "kind": name, **obj}
    problems = []
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(body, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in getattr(exc, "path", ())) or "(object)"
            problems.append(f"{where}: {getattr(exc, 'message', exc)} (Kubernetes {version} schema)")
    return problems


class DefaultingEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """Adds what a real API server fills in on create (uid, timestamps, namespace, initial status), and
    refuses what it refuses: invalid objects (422), and pods that break Pod Security "restricted" in
    the namespaces of ``restricted`` (403; a Deployment's pods are refused by its ReplicaSet instead)."""

    restricted: frozenset[str] = frozenset()

    async def _handle(self, request: Any) -> Any:
        from tests.kube.admission import problems_of, restricted_problems

        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            kind = request.resource.plural  # str() of kmock's resource is its repr, never the plural
            name = (request.data.get("metadata") or {}).get("name", "")
            invalid = problems_of(kind, request.data, restricted=False) + schema_problems(kind, request.data)
            if invalid:
                return _refusal(422, "Invalid", f"{kind} {name!r} is invalid: {'; '.join(invalid)}")
            if kind == "pods" and (request.namespace or "default") in self.restricted:
                refused = restricted_problems(request.data.get("spec") or {},
                                              (request.data.get("metadata") or {}).get("annotations"))
                if refused:
                    return _refusal(403, "Forbidden", f'pods "{name}" is forbidden: violates PodSecurity '
                                    f'"restricted:latest": {"; ".join(refused)}')
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("resourceVersion", "1")
            if kind not in CLUSTER_SCOPED:
                meta.setdefault("namespace", request.namespace or "default")
            if kind == "pods":
                request.data.setdefault("status", {"phase": "Pending"})
            elif kind == "deployments":
                request.data.setdefault("status", {"replicas": 0, "readyReplicas": 0})
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        """kmock lists every object of the resource: filter by ``labelSelector`` and ``fieldSelector``
        as the API server does (the provider finds a step's pod by its labels, events by their object)."""
        answer = await super()._serve_list(request)
        labels, fields = request.params.get("labelSelector"), request.params.get("fieldSelector")
        if labels:
            answer["items"] = [o for o in answer["items"]
                               if labels_match(labels, (o.get("metadata") or {}).get("labels") or {})]
        if fields:
            answer["items"] = [o for o in answer["items"] if fields_match(fields, o)]
        return answer


_REQUIREMENT = re.compile(r"\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*")


def _requirements(selector: str) -> list[str]:
    """Split a selector at the commas outside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def labels_match(selector: str, labels: dict[str, str]) -> bool:
    """A label selector as the API server reads it: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
    ``k in (a,b)``, ``k notin (a,b)``, comma-separated, all must hold."""
    for text in _requirements(selector):
        found = _REQUIREMENT.fullmatch(text)
        if found is None:
            raise ValueError(f"unable to parse requirement: {text!r}")
        negated, key, op, value, set_op, values = found.groups()
        have = labels.get(key)
        if op in ("=", "=="):
            ok = have == value
        elif op == "!=":
            ok = have != value
        elif set_op:
            members = {v.strip() for v in values.split(",")}
            ok = have in members if set_op == "in" else have not in members
        else:
            ok = (have is None) if negated else (have is not None)
        if not ok:
            return False
    return True


def fields_match(selector: str, obj: dict[str, Any]) -> bool:
    """A field selector: ``a.b=v``, ``a.b==v``, ``a.b!=v``, comma-separated (values are strings)."""
    for text in _requirements(selector):
        path, op, value = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", text).groups()  # type: ignore[union-attr]
        have: Any = obj
        for part in path.split("."):
            have = have.get(part) if isinstance(have, dict) else None
        have = "" if have is None else str(have)
        if (have == value) != (op != "!="):
            return False
    return True


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
