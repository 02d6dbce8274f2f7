"""get_backend(name): imports a backend only when asked, with an install hint when it is missing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clara_airflow.backends.base import Backend
from clara_airflow.errors import BackendNotInstalledError, ClaraAirflowError

_REQUIRES = {"docker": ("docker", "airflow.providers.docker"),
             "kubernetes": ("kubernetes", "airflow.providers.cncf.kubernetes")}


def get_backend(name: str, options: Mapping[str, Any] | None = None) -> Backend:
    """The backend ``docker`` or ``kubernetes``, configured by the ``[clara]`` deployment options."""
    import importlib.util

    if name not in _REQUIRES:
        raise ClaraAirflowError(f"unknown backend '{name}'; use docker or kubernetes")
    for module in _REQUIRES[name]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise BackendNotInstalledError(name, module)
    if name == "docker":
        from clara_airflow.backends.docker import DockerBackend

        backend: Backend = DockerBackend(dict(options or {}))
        return backend
    from clara_airflow.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(dict(options or {}))
    return backend


def deployment_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """Airflow's ``[clara]`` section (airflow.cfg overridden by ``AIRFLOW__CLARA__*``), parsed into
    (pipeline-level settings, deployment-only options)."""
    from airflow.sdk import conf

    from clara_airflow.spec.defaults import environ_options, parse_config

    section = {k: str(v) for k, v in (conf.getsection("clara") or {}).items()}
    return parse_config({**section, **environ_options()})
