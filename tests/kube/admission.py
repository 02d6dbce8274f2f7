"""What a real API server refuses that a bare emulator accepts: object and container names, label
values, extended resources, volume names and sub-paths, and Pod Security "restricted" (v1.30 rules) in
namespaces labelled for it. Works on API JSON (camelCase), as the server receives it. Test code only."""

from __future__ import annotations

import re
from typing import Any

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _name(kind: str, name: str) -> list[str]:
    if kind == "services":
        ok = len(name) <= 63 and DNS_1035.fullmatch(name)
    else:
        ok = len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name)
    return [] if ok else [f"metadata.name: Invalid value: {name!r}"]


def _labels(where: str, labels: dict[str, str] | None) -> list[str]:
    return [f"{where}.labels: Invalid value: {value!r}" for value in (labels or {}).values()
            if len(value) > 63 or not LABEL_VALUE.fullmatch(value)]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def pod_problems(spec: dict[str, Any], restricted: bool) -> list[str]:
    """Problems of a pod spec: always the API's own validation, plus "restricted" when asked."""
    problems = []
    names = [v["name"] for v in spec.get("volumes") or []]
    problems += [f"spec.volumes: Duplicate value: {n!r}" for n in {n for n in names if names.count(n) > 1}]
    problems += [f"spec.volumes.name: Invalid value: {n!r}" for n in names if not DNS_LABEL.fullmatch(n)]
    for container in _containers(spec):
        if not DNS_LABEL.fullmatch(container["name"]):
            problems.append(f"containers.name: Invalid value: {container['name']!r}")
        for mount in container.get("volumeMounts") or []:
            sub = mount.get("subPath") or ""
            if sub.startswith("/") or ".." in sub.split("/"):
                problems.append(f"volumeMounts.subPath: Invalid value: {sub!r}")
            if mount["name"] not in names:
                problems.append(f"volumeMounts.name: Not found: {mount['name']!r}")
        for part in ("requests", "limits"):
            for resource, amount in ((container.get("resources") or {}).get(part) or {}).items():
                if "/" in resource and not re.fullmatch(r"[0-9]+", str(amount)):
                    problems.append(f"resources.{part}[{resource}]: Invalid value: {amount!r}: must be an integer")
    return problems + (restricted_problems(spec) if restricted else [])


def restricted_problems(spec: dict[str, Any]) -> list[str]:
    """Pod Security Standards, "restricted" profile (which includes "baseline")."""
    problems = []
    pod = spec.get("securityContext") or {}
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("host namespaces")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"restricted volume types: volume {volume['name']!r} uses {', '.join(sorted(kinds))}")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        problems.append("seccompProfile: pod is Unconfined")
    if pod.get("runAsUser") == 0:
        problems.append("runAsUser=0: pod")
    for container in _containers(spec):
        name, ctx = container["name"], container.get("securityContext") or {}
        if ctx.get("privileged"):
            problems.append(f"privileged: container {name!r}")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"allowPrivilegeEscalation != false: container {name!r}")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"unrestricted capabilities: container {name!r} must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"unrestricted capabilities: container {name!r} adds {caps['add']}")
        if not (ctx.get("runAsNonRoot") or (pod.get("runAsNonRoot") and ctx.get("runAsNonRoot") is not False)):
            problems.append(f"runAsNonRoot != true: container {name!r}")
        if ctx.get("runAsUser") == 0:
            problems.append(f"runAsUser=0: container {name!r}")
        seccomp = (ctx.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"seccompProfile: container {name!r} must use RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"hostPort: container {name!r}")
    return problems


def problems_of(kind: str, obj: dict[str, Any], restricted: bool) -> list[str]:
    """Why a real API server (with Pod Security admission) would refuse to create ``obj`` of ``kind``
    (the resource's plural: pods, deployments, services, persistentvolumeclaims)."""
    meta = obj.get("metadata") or {}
    problems = _name(kind, meta.get("name") or "") + _labels("metadata", meta.get("labels"))
    if kind == "pods":
        problems += pod_problems(obj.get("spec") or {}, restricted)
    elif kind == "deployments":
        template = (obj.get("spec") or {}).get("template") or {}
        problems += _labels("spec.template.metadata", (template.get("metadata") or {}).get("labels"))
        problems += pod_problems(template.get("spec") or {}, restricted)
    return problems
