"""What every backend provides: step tasks and a service manager (Airflow-free protocol)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clara_airflow.compiler.plan import ServicePlan

# Labels on every object clara-airflow creates, and the service data folder's variable: one place.
LABEL_ID = "clara-airflow/service-id"
LABEL_MANAGED = "clara-airflow/managed"
LABEL_DEPLOYMENT = "clara-airflow/deployment"  # which deployment made it (clara_airflow.services.identity)
DATA_PATH_VAR = "NVIDIA_CLARA_SERVICE_DATA_PATH"


@dataclass(frozen=True)
class ServiceInstance:
    """A running service as its manager found or started it.

    :param host: the stable network name operators use (``clara-svc-<id>`` on Docker).
    :param created: True when this call started it (cold), False when it was found running (warm).
    :param ref: the backend's handle (container id, Deployment name).
    :param volumes: container path -> volume name.
    """

    sid: str
    host: str
    created: bool
    ref: str
    started_at: str = ""
    volumes: dict[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()  # the host's GPUs it holds (Docker with [clara] gpus)


@dataclass(frozen=True)
class Managed:
    """A service instance found by its label. :param age: seconds since it was created (inf: unknown)."""

    state: str
    age: float = float("inf")
    deployment: str = ""  # its deployment label ("" on objects made before identities)


@dataclass(frozen=True)
class StepContainer:
    """A step container found by its label (Docker): what the reaper needs to judge a leftover."""

    ref: str
    name: str
    dag_id: str
    run_id: str
    state: str
    age: float
    deployment: str = ""


@dataclass(frozen=True)
class ContainerMount:
    """One folder or named volume in a step container. :param kind: ``bind`` or ``volume``."""

    target: str
    source: str
    kind: str
    read_only: bool


@dataclass(frozen=True)
class ContainerRun:
    """What one step container runs, decided without any engine: the operator only applies it.

    :param user: ``UID:GID`` or None for the image's user.
    """

    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    mounts: tuple[ContainerMount, ...]
    labels: dict[str, str]
    name: str
    user: str | None = None


class ServiceManager(Protocol):
    def ensure(self, svc: ServicePlan, *, timeout: float, log: Any,
               sole_user: Callable[[], bool] | None = None) -> ServiceInstance: ...

    def status(self, sid: str) -> str: ...

    def stop(self, sid: str) -> bool: ...

    def remove_volumes(self, sid: str) -> list[str]: ...

    def logs(self, sid: str, lines: int = 50) -> str: ...

    def list_managed(self) -> dict[str, Managed]: ...

    def list_steps(self) -> list[StepContainer]: ...

    def remove_step(self, ref: str) -> None: ...


class Backend(Protocol):
    name: str

    def service_manager(self) -> ServiceManager: ...


def connection_values(svc: ServicePlan, host: str) -> dict[str, str]:
    """Section 7.2/7.3: ``host:port`` (bare host without port) per http name, ``path`` per volume name."""
    values = {name: f"{host}:{port}" if port else host for name, port in svc.http}
    values.update({name: path for name, path in svc.volumes})
    return values


def foreign_owner(labels: dict[str, str] | None, deployment: str | None) -> str | None:
    """The other deployment that labelled an object, or None when it is ours (or made before identities,
    or this manager was made without an identity: tools and tests)."""
    owner = (labels or {}).get(LABEL_DEPLOYMENT, "")
    return owner if owner and deployment and owner != deployment else None


def remove_command(kind: str, name: str) -> str:
    """How a person removes a gone deployment's leftover: ``kind`` is ``container`` (Docker) or
    ``Deployment`` (Kubernetes)."""
    return f"docker rm -f {name}" if kind == "container" else f"kubectl delete deployment,service {name}"


def leftover_hint(*commands: str) -> str:
    return f"if that deployment no longer exists, remove its leftover yourself ({', or '.join(commands)})"


def foreign_error(kind: str, name: str, owner: str) -> str:
    """Why an object of another deployment is left alone, and what the user can do."""
    return (f"the {kind} {name} on this engine belongs to another clara-airflow deployment ('{owner}'); "
            "deployments never share, adopt or stop each other's services: give each deployment its own Docker "
            f"engine or Kubernetes namespace, or stop that deployment's service there; "
            f"{leftover_hint(remove_command(kind, name))}")
