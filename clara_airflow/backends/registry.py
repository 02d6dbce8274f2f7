"""get_backend(name): imports a backend only when asked, with an install hint when it is missing."""

from __future__ import annotations

from typing import Any

from clara_airflow.backends.base import Backend
from clara_airflow.errors import BackendNotInstalledError, ClaraAirflowError
from clara_airflow.settings import Deployment, Options

_REQUIRES = {"docker": ("docker", "airflow.providers.docker"),
             "kubernetes": ("kubernetes", "airflow.providers.cncf.kubernetes")}


def get_backend(name: str, options: Options | None = None) -> Backend:
    """The backend ``docker`` or ``kubernetes``, configured by the pipeline's and the deployment's options."""
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

        backend: Backend = DockerBackend(options or Options())
        return backend
    from clara_airflow.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(options or Options())
    return backend


def deployment_options() -> tuple[dict[str, Any], Deployment]:
    """Airflow's ``[clara]`` section (airflow.cfg overridden by ``AIRFLOW__CLARA__*``), parsed once into
    (flat pipeline-level settings, typed deployment-only options); every bad option is reported."""
    from clara_airflow.airflow_compat import conf
    from clara_airflow.spec.defaults import environ_options, parse_config

    section = {k: str(v) for k, v in (conf.getsection("clara") or {}).items()}
    return parse_config({**section, **environ_options()})
