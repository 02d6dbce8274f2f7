"""The Docker engine itself: the client, what an unreachable engine says, the shared network, and
two small probes (a TCP connect, a container's creation time). No Airflow beyond the provider's hook."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from clara_airflow.backends.base import LABEL_MANAGED
from clara_airflow.errors import ServiceError

__all__ = ["accepts", "created_epoch", "docker_client", "engine_down", "ensure_network", "pull_image"]


def docker_client(url: str) -> Any:
    """A low-level ``docker.APIClient`` through the provider's hook (no registry login)."""
    from airflow.providers.docker.hooks.docker import DockerHook

    try:
        return DockerHook(docker_conn_id=None, base_url=url).get_conn()
    except Exception as exc:
        raise ServiceError(engine_down(url, exc)) from None


def pull_image(cli: Any, image: str, log: Any) -> None:
    from docker.errors import APIError

    log.info("image %s is not present locally; pulling it", image)
    try:
        cli.pull(image)
    except APIError as exc:
        raise ServiceError(f"image {image} is not present on the Docker engine and could not be pulled: "
                           f"{exc.explanation}; build or load it first (see docker/build.sh)") from None


def engine_down(url: object, exc: object) -> str:
    return (f"the Docker engine at {url} does not answer ({exc}); start it (scripts/setup.sh does) or set "
            "[clara] docker_url to the engine's address")


def ensure_network(cli: Any, name: str) -> None:
    """Create the user-defined network all Clara containers join, once, and keep its name unique.

    Docker's duplicate check is best effort: two tasks that create the network at the same moment (the
    first runs of a fresh engine) can both succeed, and every later use of the name then fails as
    "ambiguous". Every caller therefore settles on one network by the same rule (the one in use, then the
    oldest) and removes the empty others."""
    from docker.errors import APIError

    found = _named(cli, name)
    if not found:
        try:
            cli.create_network(name, driver="bridge", check_duplicate=True, labels={LABEL_MANAGED: "true"})
        except APIError as exc:
            if exc.status_code != 409:
                raise
        found = _named(cli, name)
    if len(found) > 1:
        _keep_one(cli, name, found)


def _named(cli: Any, name: str) -> list[dict[str, Any]]:
    return [net for net in cli.networks(names=[name]) if net["Name"] == name]  # the filter matches substrings


def _keep_one(cli: Any, name: str, found: list[dict[str, Any]]) -> None:
    from docker.errors import APIError, NotFound

    def in_use(net: dict[str, Any]) -> bool:
        try:
            return bool(cli.inspect_network(net["Id"]).get("Containers"))
        except NotFound:
            return False

    keep = min(found, key=lambda net: (not in_use(net), net.get("Created", ""), net["Id"]))
    for net in found:
        if net["Id"] != keep["Id"]:
            try:
                cli.remove_network(net["Id"])
            except NotFound:
                pass  # another caller removed it
            except APIError as exc:
                raise ServiceError(
                    f"{len(found)} Docker networks are named {name} and {net['Id'][:12]} cannot be removed "
                    f"({exc.explanation}); keep one: docker network ls --filter name={name}, then docker "
                    f"network rm the others once their containers are stopped") from None


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


def missing_model(host_mounts: Iterable[tuple[str, str]], model: str) -> str | None:
    """Why ``model`` cannot load: it is not a folder of a mounted model repository; None when it is."""
    for host_path, _ in host_mounts:
        if not os.path.isdir(os.path.join(host_path, model)):
            return (f"model '{model}' is not in the model repository {host_path}; add {host_path}/{model} or fix "
                    "the pipeline's models list")
    return None


def model_ready(address: str, model: str) -> bool:
    """KServe v2's readiness of one model on the inference server at ``address`` (port 8000)."""
    try:
        with urllib.request.urlopen(f"http://{address}:8000/v2/models/{model}/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False

