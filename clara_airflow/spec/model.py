"""Typed, immutable pipeline objects produced by :func:`clara_airflow.spec.load.load_pipeline`.

Every object carries ``where``: its place in the file's source map (:class:`~clara_airflow.spec.positions.Where`),
from which the (line, column) of the object, of each field's value and of each key is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clara_airflow.errors import Problem
from clara_airflow.spec.positions import Pos, Where

SHARED_MEMORY_TYPES = frozenset(
    ["array", "string", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f16", "f32", "f64", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
# DAG ids clara-airflow defines itself: no pipeline may take them.
REAPER_DAG_ID = "clara_service_reaper"
ERROR_DAG_PREFIX = "clara_error__"
MAX_DAG_ID = 250
API_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0")
MODEL_VARIABLES = ("NVIDIA_TRITON_HTTPURI", "NVIDIA_TRITON_GRPCURI", "NVIDIA_CLARA_TRTISURI",
                   "CLARA_TRITON_URI")


@dataclass(frozen=True)
class ContainerSpec:
    """What to run: ``image`` without tag, ``tag`` (default ``latest``), ``command`` (may be empty);
    ``host_volume``: a service's ``hostVolumePath``, mounted read-only at the same path."""

    image: str
    tag: str
    command: tuple[str, ...]
    where: Where = field(default_factory=Where, compare=False, repr=False)
    host_volume: str | None = None


@dataclass(frozen=True)
class RequestsSpec:
    """Resources as written; ``None`` means "take the default" (section 5)."""

    cpu: int | None = None
    memory: int | None = None
    gpu: int | None = None


@dataclass(frozen=True)
class InputSpec:
    """A folder an operator reads: the payload (``source`` is None) or an upstream output."""

    path: str
    source: str | None = None
    name: str | None = None
    type: str | None = None
    element_type: str | None = None
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class OutputSpec:
    """A folder an operator writes; ``name`` is None only for a lone untyped output."""

    path: str
    name: str | None = None
    type: str | None = None
    element_type: str | None = None
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class HttpConnectionSpec:
    """``NAME=host:port`` given to every declaring operator; ``port`` None means the bare host."""

    name: str
    port: int | None
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class VolumeConnectionSpec:
    """A named volume shared by the service and its operators, mounted at ``path``."""

    name: str
    path: str
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class ServiceSpec:
    """One service declaration of one operator; its identity is ``container`` (section 7.4)."""

    name: str
    container: ContainerSpec
    requests: RequestsSpec = RequestsSpec()
    variables: tuple[tuple[str, str], ...] = ()
    http: tuple[HttpConnectionSpec, ...] = ()
    volumes: tuple[VolumeConnectionSpec, ...] = ()
    description: str = ""
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class ParameterSpec:
    """A template parameter and its default, spelled as declared."""

    name: str
    default: str
    where: Where = field(default_factory=Where, compare=False, repr=False)


@dataclass(frozen=True)
class OperatorSpec:
    """One Clara operator: becomes one Airflow task named ``name``."""

    name: str
    container: ContainerSpec
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    requests: RequestsSpec = RequestsSpec()
    variables: tuple[tuple[str, str], ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    models: tuple[str, ...] = ()
    parameters: tuple[ParameterSpec, ...] = ()
    description: str = ""
    where: Where = field(default_factory=Where, compare=False, repr=False)

    def variable_at(self, name: str) -> Pos:
        """Where the variable ``name`` (as merged: the operator's own over its container's) is declared."""
        own = self.where.child("variables")
        return own.key(name) if own.has(name) else self.where.key("container", "variables", name)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline file.

    :param airflow: the ``x-airflow`` block as flat dotted keys (``payload.output_root``), validated.
    :param warnings: positioned warnings; they never invalidate the file.
    """

    path: str
    api_version: str
    name: str
    operators: tuple[OperatorSpec, ...]
    description: str = ""
    orchestrator: str | None = None
    pull_secrets: tuple[str, ...] = ()
    parameters: tuple[ParameterSpec, ...] = ()
    airflow: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    where: Where = field(default_factory=Where, compare=False, repr=False)

    @property
    def typed(self) -> bool:
        return self.api_version >= "0.5.0"

    def all_parameters(self) -> dict[str, ParameterSpec]:
        """Every declared parameter by lower-cased name, first declaration first."""
        found: dict[str, ParameterSpec] = {}
        for param in (*self.parameters, *(p for op in self.operators for p in op.parameters)):
            found.setdefault(param.name.lower(), param)
        return found
