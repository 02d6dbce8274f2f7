"""What a real API server refuses that a bare emulator accepts: object and container names, label
values, extended resources, volume names and sub-paths, and Pod Security "restricted" and "baseline"
(v1.30 rules, as upstream pod-security-admission checks them) in namespaces labelled for it. Works on API JSON (camelCase), as the server receives it. Test code only."""

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


# baseline: capabilities a container may add (upstream's default set); restricted: only NET_BIND_SERVICE
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
APPARMOR = "container.apparmor.security.beta.kubernetes.io/"


def _every_container(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Pod Security checks init, regular and ephemeral containers alike."""
    return [*_containers(spec), *(spec.get("ephemeralContainers") or [])]


def baseline_problems(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Pod Security Standards, "baseline" profile (v1.30, as pod-security-admission checks it)."""
    problems = []
    pod = spec.get("securityContext") or {}
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("host namespaces")
    problems += [f"hostPath volumes: {v['name']!r}" for v in spec.get("volumes") or [] if "hostPath" in v]
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("hostProcess: pod")
    problems += [f"forbidden sysctls: {s.get('name')}" for s in pod.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    problems += _selinux("pod", pod)
    if (pod.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("seccompProfile: pod is Unconfined")
    if (pod.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("appArmorProfile: pod is Unconfined")
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR) and value != "runtime/default" and not value.startswith("localhost/"):
            problems.append(f"AppArmor profile: annotation {key}={value}")
    for container in _every_container(spec):
        name, ctx = container["name"], container.get("securityContext") or {}
        if ctx.get("privileged"):
            problems.append(f"privileged: container {name!r}")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"hostProcess: container {name!r}")
        added = set((ctx.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            problems.append(f"non-default capabilities: container {name!r} adds {sorted(added)}")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"hostPort: container {name!r}")
        if ctx.get("procMount") not in (None, "Default"):
            problems.append(f"procMount: container {name!r} uses {ctx['procMount']}")
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"seccompProfile: container {name!r} is Unconfined")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"appArmorProfile: container {name!r} is Unconfined")
        problems += _selinux(f"container {name!r}", ctx)
    return problems


def _selinux(where: str, ctx: dict[str, Any]) -> list[str]:
    options = ctx.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
        return [f"seLinuxOptions: {where}"]
    return []


def restricted_problems(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Pod Security Standards, "restricted" profile (which includes "baseline"), v1.30."""
    problems = baseline_problems(spec, annotations)
    pod = spec.get("securityContext") or {}
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"restricted volume types: volume {volume['name']!r} uses {', '.join(sorted(kinds))}")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod.get("runAsUser") == 0:
        problems.append("runAsUser=0: pod")
    if pod.get("runAsNonRoot") is False:  # an explicit false at pod level fails even if each container says true
        problems.append("runAsNonRoot != true: pod must not set securityContext.runAsNonRoot=false")
    for container in _every_container(spec):
        name, ctx = container["name"], container.get("securityContext") or {}
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
