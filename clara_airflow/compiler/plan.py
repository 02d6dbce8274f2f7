"""Frozen, Airflow-free plan of one pipeline: what the DAG builder and the backends consume.

Plans hold only JSON-able values (strings, ints, tuples, dicts), so operators can take their parts as
arguments and Airflow can serialize them. Template placeholders (``${{ name }}``) are kept as written;
they are substituted at run time with the run's parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clara_airflow.errors import Problem
from clara_airflow.settings import PipelineSettings, Resources

Requests = Resources  # resolved resources of one container: cores, MiB, whole GPUs


@dataclass(frozen=True)
class MountPlan:
    """One folder mounted into a step container.

    :param target: the path inside the container.
    :param kind: ``payload`` (the run's payload), ``output`` (this step's output), ``upstream``
        (an output of ``operator``), ``volume`` (a service's named volume ``volume``) or ``host``
        (the host folder ``source``).
    :param operator: the producing operator for ``output`` and ``upstream``.
    :param sub: the output's sub-folder name ('' for an unnamed output).
    """

    target: str
    kind: str
    read_only: bool
    operator: str = ""
    sub: str = ""
    volume: str = ""
    source: str = ""


@dataclass(frozen=True)
class ServiceUse:
    """A step's use of a service: environment name -> connection name in the ensure task's XCom."""

    service: str
    env: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StepPlan:
    """One Clara operator as a container run; ``name`` is the task id."""

    name: str
    image: str
    tag: str
    command: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]
    requests: Requests
    upstream: tuple[str, ...]
    mounts: tuple[MountPlan, ...]
    services: tuple[ServiceUse, ...] = ()
    description: str = ""
    export: tuple[str, ...] = ()  # register-results: DICOM destinations the inputs are sent to (no container)
    skip: str = ""  # register-results with an agent clara-airflow has not: why the task is skipped (no container)

    @property
    def env_names(self) -> tuple[str, ...]:
        names = [k for k, _ in self.variables]
        names += [env for use in self.services for env, _ in use.env]
        return tuple(names)


@dataclass(frozen=True)
class ServicePlan:
    """One distinct service identity of the pipeline.

    :param id: the 12-hex id computed with parameter defaults (run time recomputes it).
    :param http: union of http connections: (connection name, port or None).
    :param volumes: union of volume connections: (connection name, path).
    :param requests: the per-key maximum over the declarations.
    :param models: models the inference server must serve (implicit model server only).
    :param host_mounts: (host path, container path) mounted read-only (the model repository).
    :param pull_secrets: the pipeline's ``pull-secrets``, given to the service's pods on Kubernetes.
    """

    id: str
    image: str
    tag: str
    command: tuple[str, ...]
    names: tuple[str, ...]
    http: tuple[tuple[str, int | None], ...]
    volumes: tuple[tuple[str, str], ...]
    variables: tuple[tuple[str, str], ...]
    requests: Requests
    consumers: tuple[str, ...]
    models: tuple[str, ...] = ()
    host_mounts: tuple[tuple[str, str], ...] = ()
    pull_secrets: tuple[str, ...] = ()  # the pipeline's image-pull secrets (Kubernetes); not part of the identity

    @property
    def ports(self) -> list[int]:
        """The distinct http ports, sorted (connections without a port have none)."""
        return sorted({p for _, p in self.http if p})

    @property
    def connections(self) -> dict[str, int | str | None]:
        found: dict[str, int | str | None] = dict(self.http)
        found.update(self.volumes)
        return found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PipelinePlan:
    """A compiled pipeline: steps in topological order, services, settings and parameters."""

    dag_id: str
    source: str
    steps: tuple[StepPlan, ...]
    services: tuple[ServicePlan, ...]
    parameters: tuple[tuple[str, str], ...] = ()
    settings: PipelineSettings = PipelineSettings()
    description: str = ""
    pull_secrets: tuple[str, ...] = ()
    name_at: tuple[int, int] = (1, 1)
    warnings: tuple[Problem, ...] = ()  # positioned; the pipeline loads (the spec's own are on the spec)

    def step(self, name: str) -> StepPlan:
        return next(s for s in self.steps if s.name == name)

    def service(self, sid: str) -> ServicePlan:
        return next(s for s in self.services if s.id == sid)
