"""Typed settings, parsed once: what a pipeline runs with (:class:`PipelineSettings`) and how this
deployment reaches its engines (:class:`Deployment`, Airflow's ``[clara]`` deployment-only options).
Together they are the :class:`Options` every backend, operator and DAG builder is given.

Frozen dataclasses with real ``bool``/``int``/``dict`` fields, modelled on Cosmos's
``RenderConfig``/``ExecutionConfig``: nothing downstream re-parses a string, and a bad ``[clara]``
value is an error naming its option, never a silent fallback. ``to_dict``/``from_dict`` round-trip
them through JSON-safe values for operator arguments. No Airflow, no engines: the bottom layer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clara_airflow.errors import ClaraAirflowError

__all__ = ["Deployment", "ModelSettings", "Options", "Payload", "PipelineSettings", "Resources", "ServiceSettings",
           "parse_deployment"]

T = TypeVar("T")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Resources:
    """Default ``requests`` of a container: cores, MiB, whole GPUs."""

    cpu: int = 1
    memory: int = 512
    gpu: int = 0


@dataclass(frozen=True)
class Payload:
    """Where a run's input comes from and its outputs go (``x-airflow.payload``)."""

    input: str | None = None
    output_root: str = "/var/lib/clara-airflow/output"
    claim: str | None = None


@dataclass(frozen=True)
class ServiceSettings:
    """Shared services: idle time before the reaper stops one, start timeout, data folder (seconds)."""

    idle_ttl: int = 3600
    start_timeout: int = 300
    data_dir: str = "/var/lib/clara-airflow/service-data"


@dataclass(frozen=True)
class ModelSettings:
    """The implicit inference server of pipelines that list ``models`` (api-version 0.6.0+)."""

    image: str = "nvcr.io/nvidia/tritonserver"
    tag: str = "23.10-py3"
    repository: str = "/var/lib/clara-airflow/models"
    requests: Resources = Resources(1, 4096, 1)


@dataclass(frozen=True)
class PipelineSettings:
    """One pipeline's resolved settings: its ``x-airflow`` block over ``clara-defaults.yaml`` over
    ``[clara]`` over these defaults. ``parameters`` holds the trigger rules per parameter name."""

    schedule: str | None = None
    start_date: str = "2024-01-01"
    catchup: bool = False
    max_active_runs: int = 16
    tags: tuple[str, ...] = ()
    owner: str = "airflow"
    retries: int = 0
    retry_delay: int = 300
    timeout: int = 1800
    run_timeout: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "docker"
    namespace: str = "default"
    allow_host_paths: bool = False
    startup_timeout: int | None = None  # Kubernetes: seconds to start a step pod (default 120, GPU steps 600)
    schedule_timeout: int | None = None  # Kubernetes: seconds to schedule it (default: startup_timeout)
    payload: Payload = Payload()
    services: ServiceSettings = ServiceSettings()
    resources: Resources = Resources()
    models: ModelSettings = ModelSettings()

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> PipelineSettings:
        """From the parser's flat, already validated keys (``payload.output_root``); unknown keys are a bug."""
        return _build(cls, _nest(flat))

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineSettings:
        return _build(cls, data)


@dataclass(frozen=True)
class Deployment:
    """Airflow's ``[clara]`` deployment-only options, typed (see the README's configuration table)."""

    docker_url: str = "unix://var/run/docker.sock"
    network: str = "clara-airflow"
    strict: bool = False
    reaper_schedule: str = "*/5 * * * *"
    remove_orphans: bool = False
    payload_root: str | None = None
    init_image: str = "busybox:1.36"
    service_heartbeat: float = 60.0
    step_user: str | None = None
    keep_failed_pods: bool = True
    kubernetes_conn_id: str | None = None
    kube_config_file: str | None = None
    in_cluster: bool | None = None
    service_account: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    storage_class: str | None = None  # of the claims clara-airflow creates (unset: the cluster's default)
    volume_access_mode: str = "ReadWriteMany"  # volume connections are mounted by a service and its steps
    volume_size: str = "1Gi"
    service_data_claim: str = "clara-service-data"  # the services' data folder (NVIDIA_CLARA_SERVICE_DATA_PATH)
    service_data_size: str = "10Gi"

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        return _build(cls, data)


@dataclass(frozen=True)
class Options:
    """Everything a backend or operator is configured with: the pipeline's settings and the deployment's."""

    pipeline: PipelineSettings = PipelineSettings()
    deployment: Deployment = Deployment()

    def located(self, *, network: str | None = None, namespace: str | None = None) -> Options:
        """The same options, pointed at the network or namespace a service record names."""
        pipeline = dataclasses.replace(self.pipeline, namespace=namespace) if namespace else self.pipeline
        deployment = dataclasses.replace(self.deployment, network=network) if network else self.deployment
        return Options(pipeline, deployment)

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline.to_dict(), "deployment": self.deployment.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Options:
        return cls(PipelineSettings.from_dict(data["pipeline"]), Deployment.from_dict(data["deployment"]))


# -- [clara] deployment options ----------------------------------------------------------------------
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


def _tolerations(raw: str) -> tuple[dict[str, Any], ...]:
    value = _json(raw, "[]")
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError('must be a JSON list of objects, like [{"key": "nvidia.com/gpu", "operator": "Exists"}]')
    return tuple(value)


_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _quantity(raw: str) -> str:
    if not _QUANTITY.fullmatch(raw.strip()):
        raise ValueError("must be a Kubernetes quantity, like 10Gi or 500Mi")
    return raw.strip()


def _k8s_name(raw: str) -> str:
    if not _NAME.fullmatch(raw.strip()):
        raise ValueError("must be a Kubernetes name (lower-case letters, digits and '-', at most 63)")
    return raw.strip()


def _access_mode(raw: str) -> str:
    if raw.strip() not in ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"):
        raise ValueError("must be ReadWriteMany, ReadWriteOnce or ReadWriteOncePod")
    return raw.strip()


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
    "service_data_size": _quantity,
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


def deployment(raw: Mapping[str, str]) -> Deployment:
    """:func:`parse_deployment`, raising one error that lists every problem."""
    found, problems = parse_deployment(raw)
    if problems:
        raise ClaraAirflowError("\n".join(problems))
    return found


# -- plumbing ---------------------------------------------------------------------------------------------
def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        here = nested
        for part in parents:
            here = here.setdefault(part, {})
        here[leaf] = value
    return nested


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    """A (nested) frozen dataclass from plain values; nested mappings become their dataclasses."""
    kinds = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(kinds)
    if unknown:
        raise ClaraAirflowError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            values[name] = _build(type(default), {**_plain(default), **value})
        elif isinstance(default, tuple) and isinstance(value, list | tuple):
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


def _plain(obj: Any) -> dict[str, Any]:
    """JSON-safe values (tuples as lists), for operator arguments and logs."""
    return dict(json.loads(json.dumps(dataclasses.asdict(obj), default=list)))
