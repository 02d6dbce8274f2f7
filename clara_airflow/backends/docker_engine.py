"""The Docker engine itself: the client, what an unreachable engine says, the shared network, and
two small probes (a TCP connect, a container's creation time). No Airflow beyond the provider's hook."""

from __future__ import annotations

import socket
from datetime import UTC
from typing import Any

from clara_airflow.backends.base import LABEL_MANAGED
from clara_airflow.errors import ServiceError

__all__ = ["accepts", "created_epoch", "docker_client", "engine_down", "ensure_network"]


def docker_client(url: str) -> Any:
    """A low-level ``docker.APIClient`` through the provider's hook (no registry login)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    try:
        return DockerHook(docker_conn_id=None, base_url=url).get_conn()
    except Exception as exc:
        raise ServiceError(engine_down(url, exc)) from None


def engine_down(url: object, exc: object) -> str:
    return (f"the Docker engine at {url} does not answer ({exc}); start it (scripts/setup.sh does) or set "
            "[clara] docker_url to the engine's address")


def ensure_network(cli: Any, name: str) -> None:
    """Create the user-defined network all Clara containers join, once."""
    from docker.errors import APIError

    if any(net["Name"] == name for net in cli.networks(names=[name])):  # the filter matches substrings
        return
    try:
        cli.create_network(name, driver="bridge", check_duplicate=True,
                           labels={LABEL_MANAGED: "true"})
    except APIError as exc:
        if exc.status_code != 409:
            raise


def accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def created_epoch(info: dict[str, Any]) -> float:
    from datetime import datetime

    text = info.get("Created", "")[:26].rstrip("Z")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
