"""Airflow's ``[clara]`` deployment-only options, parsed once from strings into :class:`Deployment`,
with every problem reported by option name."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from clara_airflow.settings.model import Deployment

__all__ = ["DEPLOYMENT_ID", "DEPLOYMENT_OPTIONS", "K8S_NAME", "parse_deployment"]

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _optional(raw: str) -> str | None:
    return raw.strip() or None


def _bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise ValueError("must be True or False")


def _optional_bool(raw: str) -> bool | None:
    return _bool(raw) if raw.strip() else None


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number of seconds (0 turns the heartbeat off)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number of seconds")
    return value


def _grace(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError("must be a finite number of seconds, 0 or more")
    return value


_USER = re.compile(r"worker|[0-9]+(:[0-9]+)?")


def _user(raw: str) -> str | None:
    text = raw.strip()
    if text and not _USER.fullmatch(text):
        raise ValueError("must be UID, UID:GID or 'worker'")
    return text or None


def _selector(raw: str) -> dict[str, str]:
    value = _json(raw, "{}")
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError('must be a JSON object of strings, like {"nvidia.com/gpu.present": "true"}')
    return value


_TOLERATION = {"key": str, "operator": str, "value": str, "effect": str, "tolerationSeconds": int}


def _tolerations(raw: str) -> tuple[dict[str, Any], ...]:
    value = _json(raw, "[]")
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError('must be a JSON list of objects, like [{"key": "nvidia.com/gpu", "operator": "Exists"}]')
    for item in value:  # as a pod spec spells them: a wrong key would break every GPU DAG at parse time
        for key, given in item.items():
            if key not in _TOLERATION:
                raise ValueError(f"a toleration has the key {key!r}; allowed: {', '.join(_TOLERATION)}")
            if not isinstance(given, _TOLERATION[key]) or isinstance(given, bool):
                raise ValueError(f"a toleration's {key} must be a {_TOLERATION[key].__name__}, not {given!r}")
        if item.get("operator", "Equal") not in ("Equal", "Exists"):
            raise ValueError(f"a toleration's operator must be Equal or Exists, not {item['operator']!r}")
        if item.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"a toleration's effect must be NoSchedule, PreferNoSchedule or NoExecute, not "
                             f"{item['effect']!r}")
    return tuple(value)


_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label: namespaces, claims


def _quantity(raw: str) -> str:
    if not _QUANTITY.fullmatch(raw.strip()):
        raise ValueError("must be a Kubernetes quantity, like 10Gi or 500Mi")
    return raw.strip()


def _k8s_name(raw: str) -> str:
    if not K8S_NAME.fullmatch(raw.strip()):
        raise ValueError("must be a Kubernetes name (lower-case letters, digits and '-', at most 63)")
    return raw.strip()


def _access_mode(raw: str) -> str:
    if raw.strip() == "ReadWriteOncePod":  # a claim is always mounted by more than one pod: it could never work
        raise ValueError("ReadWriteOncePod cannot work here: a service and the steps that use it (or several "
                         "services) mount the same claim from different pods; use ReadWriteMany (steps and "
                         "services on any node) or ReadWriteOnce (all of them on one node)")
    if raw.strip() not in ("ReadWriteMany", "ReadWriteOnce"):
        raise ValueError("must be ReadWriteMany or ReadWriteOnce")
    return raw.strip()


_GPU = re.compile(r"[0-9]{1,3}|(GPU|MIG)-[0-9A-Za-z./-]{1,80}")


def _gpus(raw: str) -> tuple[str, ...]:
    text = raw.strip()
    if text.lower() == "auto":
        return ("auto",)
    found = tuple(item.strip() for item in text.split(",")) if text else ()
    bad = [item for item in found if not _GPU.fullmatch(item)]
    if bad:
        raise ValueError(f"must be 'auto' or GPU indices or UUIDs separated by commas, like 0,1 or GPU-8f2c...; "
                         f"not {', '.join(map(repr, bad))}")
    if len(set(found)) != len(found):
        raise ValueError("lists a GPU twice")
    return found


def _assignment(raw: str) -> str:
    if raw.strip() not in ("device_requests", "visible_devices"):
        raise ValueError("must be device_requests (Docker's --gpus) or visible_devices (NVIDIA_VISIBLE_DEVICES, "
                         "for engines whose default runtime is nvidia)")
    return raw.strip()


def _absolute(raw: str) -> str:
    if not raw.strip().startswith("/"):
        raise ValueError("must be an absolute folder path")
    return raw.strip()


DEPLOYMENT_ID = re.compile(r"[a-z0-9]([a-z0-9._-]{0,38}[a-z0-9])?")  # a label value on Docker and Kubernetes


def _deployment_id(raw: str) -> str | None:
    text = raw.strip()
    if text and not DEPLOYMENT_ID.fullmatch(text):
        raise ValueError("must be 1-40 lower-case letters, digits, '.', '_' or '-' (a label value), starting and "
                         "ending with a letter or digit")
    return text or None


def _json(raw: str, empty: str) -> Any:
    try:
        return json.loads(raw.strip() or empty)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None


_DEPLOYMENT: dict[str, Callable[[str], Any]] = {
    "docker_url": _text, "network": _text, "strict": _bool, "reaper_schedule": _text, "remove_orphans": _bool,
    "payload_root": _optional, "init_image": _text, "service_heartbeat": _seconds, "step_user": _user,
    "keep_failed_pods": _bool, "kubernetes_conn_id": _optional, "kube_config_file": _optional,
    "in_cluster": _optional_bool, "service_account": _optional, "node_selector": _selector,
    "gpu_node_selector": _selector, "tolerations": _tolerations, "storage_class": _optional,
    "volume_access_mode": _access_mode, "volume_size": _quantity, "service_data_claim": _k8s_name,
    "service_data_size": _quantity, "service_data_access_mode": _access_mode, "dicom_config": _optional, "deployment_id": _deployment_id,
    "step_grace": _grace, "gpus": _gpus, "gpu_assignment": _assignment, "gpu_state_dir": _absolute,
}
DEPLOYMENT_OPTIONS = tuple(_DEPLOYMENT)


def parse_deployment(raw: Mapping[str, str]) -> tuple[Deployment, list[str]]:
    """``[clara]`` deployment-only options (strings, as Airflow's config gives them) -> (Deployment,
    every problem as ``[clara] <option> = '<value>': <what is wrong>``). Other keys are ignored."""
    values: dict[str, Any] = {}
    problems = []
    for option, text in raw.items():
        parse = _DEPLOYMENT.get(option.lower())
        if parse is None:
            continue
        try:
            values[option.lower()] = parse(str(text))
        except ValueError as exc:
            problems.append(f"[clara] {option} = {str(text)!r}: {exc}")
    return Deployment(**values), problems
