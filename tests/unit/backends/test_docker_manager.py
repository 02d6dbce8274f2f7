"""DockerServiceManager against a mocked docker APIClient (as the docker provider's own tests do):
the start lock, the states a found container can be in, and what a failure says."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import MagicMock

import pytest

from clara_airflow.backends.docker import LABEL_ID, LABEL_MANAGED, DockerServiceManager
from clara_airflow.errors import ServiceError
from tests.helpers import busybox_service, make_options

SID = "0123456789ab"
LOG = logging.getLogger("test")


def running(networks: tuple[str, ...] = ("net",)) -> dict[str, Any]:
    return {"Id": "c-1", "Name": f"/clara-svc-{SID}", "Created": "2026-01-01T00:00:00.0Z",
            "State": {"Status": "running", "StartedAt": "2026-01-01T00:00:01.5Z"},
            "NetworkSettings": {"Networks": {n: {"IPAddress": "10.0.0.2"} for n in networks}}, "Mounts": [],
            "HostConfig": {"Memory": 0}}


def api_error(status: int) -> Exception:
    from docker.errors import APIError

    response = MagicMock(status_code=status)
    return APIError(f"HTTP {status}", response=response, explanation=f"status {status}")


@pytest.fixture
def cli(monkeypatch: Any) -> Any:
    from docker import APIClient

    client = MagicMock(spec=APIClient)
    client.networks.return_value = [{"Name": "net"}]
    client.create_container.return_value = {"Id": "c-1"}
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: True)
    return client


def manager(cli: Any, tmp_path: Any) -> DockerServiceManager:
    made = DockerServiceManager(make_options({"network": "net", "services.data_dir": str(tmp_path / "data")}))
    made.__dict__["cli"] = cli
    return made


def test_a_missing_service_is_created_with_its_labels_data_folder_and_no_published_port(cli: Any,
                                                                                        tmp_path: Any) -> None:
    from docker.errors import NotFound

    cli.inspect_container.side_effect = [NotFound("no"), running()]
    found = manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)
    assert found.created and found.host == f"clara-svc-{SID}" and found.started_at.startswith("2026-01-01T00:00:01")
    kwargs = cli.create_container.call_args.kwargs
    assert kwargs["name"] == f"clara-svc-{SID}"
    assert kwargs["labels"][LABEL_ID] == SID and kwargs["labels"][LABEL_MANAGED] == "true"
    assert kwargs["environment"]["NVIDIA_CLARA_SERVICE_DATA_PATH"] == str(tmp_path / "data")
    host = cli.create_host_config.call_args.kwargs
    assert "port_bindings" not in host and "privileged" not in host
    assert host["security_opt"] == ["no-new-privileges"] and host["network_mode"] == "net"
    cli.start.assert_called_once_with("c-1")


def test_on_409_the_winners_container_is_reused_not_an_error(cli: Any, tmp_path: Any) -> None:
    from docker.errors import NotFound

    cli.inspect_container.side_effect = [NotFound("no"), running()]
    cli.create_container.side_effect = api_error(409)
    found = manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)
    assert not found.created and found.ref == "c-1"
    cli.start.assert_not_called()


def test_another_create_error_is_a_service_error(cli: Any, tmp_path: Any) -> None:
    from docker.errors import NotFound

    cli.inspect_container.side_effect = NotFound("no")
    cli.create_container.side_effect = api_error(500)
    with pytest.raises(ServiceError, match=f"cannot create service clara-svc-{SID}"):
        manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)


@pytest.mark.parametrize(("status", "action"), [("exited", "remove_container"), ("dead", "remove_container"),
                                                ("paused", "unpause"), ("created", "start")])
def test_a_found_container_is_moved_towards_running(cli: Any, tmp_path: Any, status: str, action: str) -> None:
    stuck = {**running(), "State": {"Status": status, "ExitCode": 1}}
    cli.inspect_container.side_effect = [stuck, running()]
    manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)
    getattr(cli, action).assert_called_once()


def test_a_running_service_on_another_network_is_attached(cli: Any, tmp_path: Any) -> None:
    cli.inspect_container.side_effect = [running(("elsewhere",)), running(("elsewhere", "net"))]
    manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)
    cli.connect_container_to_network.assert_called_once_with("c-1", "net")


def test_a_failed_start_removes_the_container_and_says_why(cli: Any, tmp_path: Any) -> None:
    from docker.errors import NotFound

    cli.inspect_container.side_effect = NotFound("no")
    cli.start.side_effect = api_error(500)
    with pytest.raises(ServiceError, match="cannot start service"):
        manager(cli, tmp_path).ensure(busybox_service(SID, "x", 8080), timeout=5, log=LOG)
    cli.remove_container.assert_called_once_with("c-1", force=True)


def test_list_managed_and_steps_carry_states_and_ages(cli: Any, tmp_path: Any) -> None:
    import time

    cli.containers.side_effect = [
        [{"Labels": {LABEL_ID: SID}, "State": "running", "Created": time.time() - 100}],
        [{"Id": "s-1", "Names": ["/clara-x"], "Labels": {"clara-airflow/dag-id": "d", "clara-airflow/run-id": "r"},
          "State": "exited", "Created": time.time() - 50}]]
    made = manager(cli, tmp_path)
    (sid, found), = made.list_managed().items()
    assert sid == SID and found.state == "running" and 99 < found.age < 110
    (step,) = made.list_steps()
    assert (step.ref, step.name, step.dag_id, step.run_id, step.state) == ("s-1", "clara-x", "d", "r", "exited")
