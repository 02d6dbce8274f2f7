"""The typed settings themselves, parsed once: what a pipeline runs with (:class:`PipelineSettings`) and how this
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clara_airflow.errors import ClaraAirflowError

__all__ = ["BatchSettings", "Deployment", "ModelSettings", "Options", "Payload", "PipelineSettings", "Resources",
           "Retention", "ServiceSettings"]

T = TypeVar("T")


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
class BatchSettings:
    """Batch mode (``x-airflow.batch``): each complete direct sub-folder of ``inbox`` is one study, processed
    once by one successful run. ``quiet_seconds``: a study without a ``.complete`` file counts once nothing
    in it changed for this long. ``max_studies``: per run; the rest wait for the next one."""

    inbox: str | None = None
    quiet_seconds: int = 60
    max_studies: int = 500


@dataclass(frozen=True)
class Retention:
    """How long what runs leave behind is kept, in seconds (None: forever): ``outputs``, a run's output
    folder after the run ended; ``studies``, a processed study (batch inbox, DICOM receiver group)."""

    outputs: int | None = None
    studies: int | None = None


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
    gpu_wait: int | None = None  # Docker: seconds a step waits for free GPUs of its host (default: timeout)
    payload: Payload = Payload()
    services: ServiceSettings = ServiceSettings()
    batch: BatchSettings = BatchSettings()
    resources: Resources = Resources()
    retention: Retention = Retention()
    models: ModelSettings = ModelSettings()

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> PipelineSettings:
        """From the parser's flat, already validated keys (``payload.output_root``); unknown keys are a bug.
        Cached by value: a dags folder's pipelines mostly share their settings, and the result is frozen."""
        key = repr(sorted(flat.items()))
        found = _FLAT_CACHE.get(key)
        if found is None:
            if len(_FLAT_CACHE) > 4096:
                _FLAT_CACHE.clear()
            found = _FLAT_CACHE[key] = _build(cls, _nest(flat))
        return found

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineSettings:
        return _build(cls, data)


_FLAT_CACHE: dict[str, PipelineSettings] = {}


@dataclass(frozen=True)
class Deployment:
    """Airflow's ``[clara]`` deployment-only options, typed (see the README's configuration table)."""

    docker_url: str = "unix://var/run/docker.sock"
    network: str = "clara-airflow"
    strict: bool = False
    reaper_schedule: str = "*/5 * * * *"
    remove_orphans: bool = False
    step_grace: float = 600.0  # seconds an ended run's step container is kept for a look before the reaper removes it
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
    service_data_access_mode: str = "ReadWriteMany"  # every service of the namespace mounts it, on any node
    gpus: tuple[str, ...] = ()  # this Docker host's GPUs (indices or UUIDs), ("auto",): found through NVML
    gpu_assignment: str = "device_requests"  # or "visible_devices" (NVIDIA_VISIBLE_DEVICES, nvidia default runtime)
    gpu_state_dir: str = "/var/lib/clara-airflow/gpus"  # who holds which GPU of this host, and its lock
    dicom_config: str | None = None  # the DICOM receiver's dicom.yaml: its destinations are register-results' targets
    # who owns a container or record on a shared engine: unset, one is made once per metadata database
    # (the Variable clara_deployment_id, clara_airflow.services.identity)
    deployment_id: str | None = None

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

    def identified(self, deployment_id: str) -> Options:
        """The same options, with the deployment's identity resolved (labels, foreign-container checks)."""
        return dataclasses.replace(self, deployment=dataclasses.replace(self.deployment, deployment_id=deployment_id))

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


def _build(cls: type[T], data: Mapping[str, Any], base: T | None = None) -> T:
    """A (nested) frozen dataclass from plain values; nested mappings become their dataclasses, over the
    field's own default (``models.requests`` is not ``Resources()``)."""
    kinds = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(kinds)
    if unknown:
        raise ClaraAirflowError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        spec = kinds[name]
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            values[name] = _build(type(default), value, default)
        elif isinstance(default, tuple) and isinstance(value, list | tuple):
            values[name] = tuple(value)
        else:
            values[name] = value
    return dataclasses.replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]


def _plain(obj: Any) -> dict[str, Any]:
    """JSON-safe values (tuples as lists), for operator arguments and logs."""
    return dict(json.loads(json.dumps(dataclasses.asdict(obj), default=list)))
