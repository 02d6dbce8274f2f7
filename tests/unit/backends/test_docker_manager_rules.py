"""DockerServiceManager, rule by rule, against a mocked docker APIClient: what a created service
container gets, how each found state is handled, readiness and its messages, and administration.
These pin the messages and arguments exactly, so that the mutation pass (scripts/mutation.sh) sees
every changed string, status code and boundary."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from unittest.mock import MagicMock

import pytest

from clara_airflow.backends.base import DATA_PATH_VAR, LABEL_ID, LABEL_MANAGED
from clara_airflow.backends.docker import DockerBackend, DockerServiceManager
from clara_airflow.compiler.identity import volume_name
from clara_airflow.compiler.plan import Requests, ServicePlan
from clara_airflow.errors import ServiceError
from tests.helpers import make_options

SID = "0123456789ab"
NAME = f"clara-svc-{SID}"


def plan(**changes: Any) -> ServicePlan:
    base = ServicePlan(id=SID, image="reg/triton", tag="21.02", command=("serve", "--dir=$(DATA)", "$(NOPE)"),
                       names=("trtis",), http=(("URI", 8000), ("GRPC", 8001)), volumes=(),
                       variables=(("DATA", "/models"),), requests=Requests(2, 512, 0), consumers=("x",))
    return dataclasses.replace(base, **changes)


def info(status: str = "running", *, networks: tuple[str, ...] = ("net",), ip: str = "10.0.0.2",
         created: str = "2026-01-01T00:00:00.0Z", **extra: Any) -> dict[str, Any]:
    return {"Id": "c-1", "Name": f"/{NAME}", "Created": created,
            "State": {"Status": status, "ExitCode": 3, "StartedAt": "2026-01-01T00:00:01Z"},
            "NetworkSettings": {"Networks": {n: {"IPAddress": ip} for n in networks}}, "Mounts": [],
            "HostConfig": {"Memory": 0}, **extra}


def api_error(status: int, explanation: str = "") -> Exception:
    from docker.errors import APIError

    return APIError(f"HTTP {status}", response=MagicMock(status_code=status), explanation=explanation or f"e{status}")


def not_found() -> Exception:
    from docker.errors import NotFound

    return NotFound("no such container")


@pytest.fixture
def cli(monkeypatch: Any) -> Any:
    from docker import APIClient

    client = MagicMock(spec=APIClient)
    client.networks.return_value = [{"Name": "net"}]
    client.create_container.return_value = {"Id": "c-1"}
    client.logs.return_value = b"last words\n"
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: True)
    return client


@pytest.fixture
def log() -> Any:
    return MagicMock(spec=logging.Logger)


def manager(cli: Any, tmp_path: Any, **options: Any) -> DockerServiceManager:
    made = DockerServiceManager(make_options({"network": "net", "services.data_dir": str(tmp_path / "data"), **options}))
    made.__dict__["cli"] = cli
    made.POLL = 0.001
    return made


def logged(log: Any) -> list[str]:
    return [call.args[0] % call.args[1:] for call in log.info.call_args_list + log.warning.call_args_list]


# -- settings -----------------------------------------------------------------------------------------
def test_defaults_and_options() -> None:
    made = DockerServiceManager(make_options({}))
    assert (made.url, made.network, made.data_dir) == (
        "unix://var/run/docker.sock", "clara-airflow", "/var/lib/clara-airflow/service-data")
    given = DockerServiceManager(make_options({"docker_url": "tcp://h:2375", "network": "n", "services.data_dir": "/d"}))
    assert (given.url, given.network, given.data_dir) == ("tcp://h:2375", "n", "/d")
    backend = DockerBackend(make_options({"network": "n"}))
    assert backend.name == "docker" and backend.service_manager().network == "n"
    assert DockerServiceManager.POLL == 0.1


def test_the_client_is_made_once_per_manager_for_its_url(monkeypatch: Any) -> None:
    made: list[str] = []
    monkeypatch.setattr("clara_airflow.backends.docker.docker_client", lambda url: made.append(url) or object())
    manager_ = DockerServiceManager(make_options({"docker_url": "tcp://h:2375"}))
    assert manager_.cli is manager_.cli and made == ["tcp://h:2375"]


# -- create ---------------------------------------------------------------------------------------------
def test_a_created_container_gets_exactly_this(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.side_effect = [not_found(), info(Mounts=[{"Destination": "/store"}])]
    svc = plan(volumes=(("store", "/store"),), host_mounts=(("/srv/models", "/models"),),
               requests=Requests(2, 512, 1))
    found = manager(cli, tmp_path).ensure(svc, timeout=5, log=log)
    kwargs = cli.create_container.call_args.kwargs
    data = str(tmp_path / "data")
    assert kwargs == {"image": "reg/triton:21.02", "name": NAME, "detach": True,
                      "environment": {"DATA": "/models", DATA_PATH_VAR: data},
                      "host_config": cli.create_host_config.return_value,
                      "command": ["serve", "--dir=/models", "$(NOPE)"],
                      "labels": {LABEL_ID: SID, LABEL_MANAGED: "true", "clara-airflow/image": "reg/triton:21.02"}}
    host = cli.create_host_config.call_args.kwargs
    mounts = [(m["Target"], m["Source"], m["Type"], m["ReadOnly"]) for m in host.pop("mounts")]
    assert mounts == [(data, data, "bind", False), ("/store", volume_name(SID, "/store"), "volume", False),
                      ("/models", "/srv/models", "bind", True)]
    requests = host.pop("device_requests")
    assert [(r["Count"], r["Capabilities"]) for r in requests] == [(1, [["gpu"]])]
    assert host == {"network_mode": "net", "nano_cpus": 2 * 10**9, "mem_limit": "512m",
                    "security_opt": ["no-new-privileges"], "init": True}
    assert (tmp_path / "data").is_dir()
    assert found == dataclasses.replace(found, sid=SID, host=NAME, created=True, ref="c-1",
                                        started_at="2026-01-01T00:00:01Z",
                                        volumes={"/store": volume_name(SID, "/store")})
    assert f"starting service {NAME} from reg/triton:21.02" in logged(log)


def test_an_empty_command_keeps_the_images_own(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.side_effect = [not_found(), info()]
    (tmp_path / "data").mkdir()  # an existing data folder is fine
    manager(cli, tmp_path).ensure(plan(command=()), timeout=5, log=log)
    assert cli.create_container.call_args.kwargs["command"] is None
    assert cli.create_host_config.call_args.kwargs["device_requests"] == []


def test_a_missing_image_is_pulled_then_created(cli: Any, tmp_path: Any, log: Any) -> None:
    from docker.errors import ImageNotFound

    cli.inspect_container.side_effect = [not_found(), info()]
    cli.create_container.side_effect = [ImageNotFound("gone"), {"Id": "c-1"}]
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    cli.pull.assert_called_once_with("reg/triton:21.02")
    assert "image reg/triton:21.02 is not present locally; pulling it" in logged(log)
    cli.start.assert_called_once_with("c-1")


def test_an_image_that_cannot_be_pulled_says_how_to_build_it(cli: Any, tmp_path: Any, log: Any) -> None:
    from docker.errors import ImageNotFound

    cli.inspect_container.side_effect = [not_found()]
    cli.create_container.side_effect = ImageNotFound("gone")
    cli.pull.side_effect = api_error(404, "no registry")
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert str(caught.value) == ("image reg/triton:21.02 is not present on the Docker engine and could not be "
                                 "pulled: no registry; build or load it first (see docker/build.sh)")


def test_losing_the_create_race_waits_for_the_winner(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.side_effect = [not_found(), info("created", created="2999-01-01T00:00:00Z"), info()]
    cli.create_container.side_effect = api_error(409)
    found = manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert found.created is False
    cli.start.assert_not_called()  # the winner starts its own fresh container
    assert f"service {NAME} is being started by another task; waiting for it" in logged(log)


def test_a_create_error_names_the_service_and_image(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.side_effect = [not_found()]
    cli.create_container.side_effect = api_error(500, "disk full")
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert str(caught.value) == f"cannot create service {NAME} (reg/triton:21.02): disk full"


@pytest.mark.parametrize(("explanation", "hint"), [
    ("could not select device driver \"\" with capabilities: [[gpu]]",
     " (the Docker engine has no GPU runtime; install nvidia-container-toolkit or lower requests.gpu)"),
    ("port is taken", ""),
])
def test_a_start_error_removes_the_container_and_hints_at_gpus(cli: Any, tmp_path: Any, log: Any,
                                                               explanation: str, hint: str) -> None:
    cli.inspect_container.side_effect = [not_found()]
    cli.start.side_effect = api_error(500, explanation)
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert str(caught.value) == f"cannot start service {NAME} (reg/triton:21.02): {explanation}{hint}"
    cli.remove_container.assert_called_once_with("c-1", force=True)


# -- found states -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "created", "calls"), [
    ("exited", "2026-01-01T00:00:00Z", [("remove_container", ("c-1",), {"force": True})]),
    ("dead", "2026-01-01T00:00:00Z", [("remove_container", ("c-1",), {"force": True})]),
    ("paused", "2026-01-01T00:00:00Z", [("unpause", ("c-1",), {})]),
    ("created", "2026-01-01T00:00:00Z", [("start", ("c-1",), {})]),  # its creator died before starting it
    ("created", "2999-01-01T00:00:00Z", []),  # young: its creator is about to start it
    ("restarting", "2026-01-01T00:00:00Z", []),  # the engine is on it
])
def test_a_found_container_is_moved_towards_running(cli: Any, tmp_path: Any, log: Any, status: str, created: str,
                                                    calls: list[Any]) -> None:
    cli.inspect_container.side_effect = [info(status, created=created), info()]
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    acted = [(c[0], c[1], c[2]) for c in cli.method_calls if c[0] in ("remove_container", "unpause", "start")]
    assert acted == calls
    cli.create_container.assert_not_called()


@pytest.mark.parametrize(("age", "started"), [(4.0, False), (5.0, False), (5.5, True), (6.0, True)])
def test_a_created_container_is_started_once_it_is_older_than_5_seconds(cli: Any, tmp_path: Any, log: Any,
                                                                       monkeypatch: Any, age: float,
                                                                       started: bool) -> None:
    monkeypatch.setattr("clara_airflow.backends.docker._created_epoch", lambda info: 1000.0)
    monkeypatch.setattr("clara_airflow.backends.docker.time.time", lambda: 1000.0 + age)
    cli.inspect_container.side_effect = [info("created"), info()]
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert cli.start.called is started


def test_a_young_created_container_is_started_by_the_task_that_created_it(cli: Any, tmp_path: Any,
                                                                          log: Any) -> None:
    cli.inspect_container.side_effect = [not_found(), info("created", created="2999-01-01T00:00:00Z"), info()]
    cli.start.side_effect = [None, None]
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert cli.start.call_count == 2  # after create, and again when found "created": it is ours


def test_a_replaced_container_is_logged_with_its_exit_code(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.side_effect = [info("exited"), not_found(), info()]
    found = manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert f"service container {NAME} is exited (exit code 3); replacing it" in logged(log)
    assert found.created


@pytest.mark.parametrize("status", [304, 404, 409])
def test_a_state_change_that_lost_a_race_is_retried(cli: Any, tmp_path: Any, log: Any, status: int) -> None:
    cli.inspect_container.side_effect = [info("paused"), info()]
    cli.unpause.side_effect = api_error(status)
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)


@pytest.mark.parametrize("status", [303, 403, 410, 500])
def test_another_state_change_error_is_raised(cli: Any, tmp_path: Any, log: Any, status: int) -> None:
    from docker.errors import APIError

    cli.inspect_container.side_effect = [info("paused"), info()]
    cli.unpause.side_effect = api_error(status)
    with pytest.raises(APIError):
        manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)


def test_a_container_stuck_in_a_state_fails_with_its_logs(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.return_value = info("restarting")
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=0.05, log=log)
    assert str(caught.value) == (f"service {NAME} (reg/triton:21.02) is stuck in state 'restarting'\n"
                                 "--- last service log lines ---\nlast words")
    cli.logs.assert_called_with(NAME, tail=50)


# -- network and configuration -------------------------------------------------------------------
def test_a_service_on_another_network_is_attached_and_reached_by_its_address(cli: Any, tmp_path: Any, log: Any,
                                                                             monkeypatch: Any) -> None:
    asked = []
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: asked.append(address) or True)
    cli.inspect_container.side_effect = [info(networks=("other",)), info(networks=("other", "net"), ip="10.9.9.9")]
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    cli.connect_container_to_network.assert_called_once_with("c-1", "net")
    cli.inspect_container.assert_called_with("c-1")
    assert asked == ["10.9.9.9", "10.9.9.9"]
    assert f"attaching service {NAME} to the network net" in logged(log)


@pytest.mark.parametrize("status", [403, 409])
def test_an_attach_another_task_already_made_is_fine(cli: Any, tmp_path: Any, log: Any, status: int) -> None:
    cli.inspect_container.side_effect = [info(networks=("other",)), info(networks=("other", "net"))]
    cli.connect_container_to_network.side_effect = api_error(status)
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)


@pytest.mark.parametrize("status", [404, 410, 500])
def test_another_attach_error_is_raised(cli: Any, tmp_path: Any, log: Any, status: int) -> None:
    from docker.errors import APIError

    cli.inspect_container.side_effect = [info(networks=("other",)), info(networks=("other", "net"))]
    cli.connect_container_to_network.side_effect = api_error(status)
    with pytest.raises(APIError):
        manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)


def test_without_an_address_the_service_name_is_used(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any) -> None:
    asked = []
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: asked.append(address) or True)
    found = info(ip="")
    del found["State"]["StartedAt"]
    cli.inspect_container.return_value = found
    instance = manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    assert asked == [NAME, NAME] and instance.started_at == "" and instance.volumes == {}


def test_a_running_service_without_a_declared_volume_must_be_restarted(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.return_value = info(Mounts=[{"Destination": "/a"}])
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(volumes=(("a", "/a"), ("b", "/b"), ("c", "/c"))), timeout=5, log=log)
    assert str(caught.value) == (f"service {NAME} is running without the volume(s) /b, /c this pipeline declares; "
                                 f"stop it with 'clara-airflow services stop {SID}' so the next run starts it "
                                 "with them")


def test_a_found_service_with_all_its_volumes_is_used(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.return_value = info(Mounts=[{"Destination": "/a"}, {"Destination": "/b"}])
    found = manager(cli, tmp_path).ensure(plan(volumes=(("a", "/a"), ("b", "/b"))), timeout=5, log=log)
    assert not found.created and set(found.volumes) == {"/a", "/b"}


@pytest.mark.parametrize(("memory", "warned"), [(0, False), (None, False), (511 * 2**20, True),
                                                (512 * 2**20, False), (1024 * 2**20, False)])
def test_less_memory_than_asked_is_a_warning(cli: Any, tmp_path: Any, log: Any, memory: int | None,
                                             warned: bool) -> None:
    cli.inspect_container.return_value = info(HostConfig={"Memory": memory})
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    message = f"service {NAME} runs with 511 MiB of memory; this pipeline asks for 512 MiB"
    assert (message in logged(log)) is warned
    assert log.warning.called is warned


def test_a_record_without_host_config_or_mounts_is_accepted(cli: Any, tmp_path: Any, log: Any) -> None:
    found = info()
    del found["HostConfig"], found["Mounts"]
    cli.inspect_container.return_value = found
    manager(cli, tmp_path).ensure(plan(), timeout=5, log=log)
    log.warning.assert_not_called()


# -- readiness ----------------------------------------------------------------------------------------
def test_ports_are_awaited_in_order_with_a_backoff(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any) -> None:
    answers = {8000: [False, False, False, False, True], 8001: [False, True]}
    asked: list[int] = []
    slept: list[float] = []

    def accepts(address: str, port: int) -> bool:
        asked.append(port)
        return answers[port].pop(0)

    monkeypatch.setattr("clara_airflow.backends.docker._accepts", accepts)
    monkeypatch.setattr("clara_airflow.backends.docker.time.sleep", slept.append)
    cli.inspect_container.return_value = info()
    made = manager(cli, tmp_path)
    made.POLL = 0.05
    made.ensure(plan(), timeout=5, log=log)
    assert asked == [8000] * 5 + [8001] * 2
    assert slept == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_a_port_that_never_opens_times_out_naming_it(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: port == 8000)
    cli.inspect_container.return_value = info()
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=0.05, log=log)
    assert str(caught.value).startswith(f"service {NAME} (reg/triton:21.02) did not accept connections on port 8001 "
                                        "in time (services.start_timeout)\n--- last service log lines ---\n")


@pytest.mark.parametrize(("after", "state"), [(None, "removed"), (info("exited"), "exited (exit code 3)")])
def test_a_service_that_dies_while_starting_fails_at_once(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any,
                                                          after: Any, state: str) -> None:
    monkeypatch.setattr("clara_airflow.backends.docker._accepts", lambda address, port: False)
    cli.inspect_container.side_effect = [info(), after or not_found()]
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(), timeout=60, log=log)
    assert str(caught.value) == (f"service {NAME} (reg/triton:21.02) stopped while starting: {state}\n"
                                 "--- last service log lines ---\nlast words")


class Answer:
    def __init__(self, status: int) -> None:
        self.status = status

    def __enter__(self) -> Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_models_are_awaited_on_the_inference_servers_ready_route(cli: Any, tmp_path: Any, log: Any,
                                                                 monkeypatch: Any) -> None:
    (tmp_path / "repo" / "seg").mkdir(parents=True)
    (tmp_path / "repo" / "cls").mkdir()
    answers = [OSError("refused"), Answer(503), Answer(200), Answer(200)]
    urls: list[str] = []

    def urlopen(url: str, timeout: float) -> Answer:
        assert timeout == 2
        urls.append(url)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    slept: list[float] = []
    monkeypatch.setattr("clara_airflow.backends.docker.time.sleep", slept.append)
    cli.inspect_container.return_value = info()
    made = manager(cli, tmp_path)
    made.POLL = 0.1
    made.ensure(plan(models=("seg", "cls"), host_mounts=((str(tmp_path / "repo"), "/models"),)), timeout=5, log=log)
    assert urls == ["http://10.0.0.2:8000/v2/models/seg/ready"] * 3 + ["http://10.0.0.2:8000/v2/models/cls/ready"]
    assert slept == [0.5, 0.5]  # five polls between asks of the ready route


def test_a_model_missing_from_the_repository_says_where_to_add_it(cli: Any, tmp_path: Any, log: Any) -> None:
    cli.inspect_container.return_value = info()
    repo = str(tmp_path / "repo")
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(models=("seg",), host_mounts=((repo, "/models"),)), timeout=5, log=log)
    assert str(caught.value) == (f"model 'seg' is not in the model repository {repo}; add {repo}/seg or fix the "
                                 "pipeline's models list")


def test_a_model_that_never_gets_ready_times_out(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any) -> None:
    (tmp_path / "repo" / "seg").mkdir(parents=True)
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Answer(503))
    cli.inspect_container.return_value = info()
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).ensure(plan(models=("seg",), host_mounts=((str(tmp_path / "repo"), "/m"),)),
                                      timeout=0.05, log=log)
    assert str(caught.value).startswith(f"model 'seg' did not become ready on {NAME}\n--- last service log lines")


def test_a_model_server_that_dies_fails_at_once(cli: Any, tmp_path: Any, log: Any, monkeypatch: Any) -> None:
    (tmp_path / "repo" / "seg").mkdir(parents=True)
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Answer(503))
    cli.inspect_container.side_effect = [info(), info(), info("exited")]
    with pytest.raises(ServiceError, match="stopped while starting: exited"):
        manager(cli, tmp_path).ensure(plan(models=("seg",), host_mounts=((str(tmp_path / "repo"), "/m"),)),
                                      timeout=60, log=log)


# -- administration -----------------------------------------------------------------------------
def test_status_is_the_containers_state_or_missing(cli: Any, tmp_path: Any) -> None:
    cli.inspect_container.side_effect = [info("paused"), not_found()]
    made = manager(cli, tmp_path)
    assert made.status(SID) == "paused" and made.status(SID) == "missing"
    cli.inspect_container.assert_called_with(NAME)


def test_stop_removes_by_name_and_says_whether_there_was_one(cli: Any, tmp_path: Any) -> None:
    cli.remove_container.side_effect = [None, not_found()]
    made = manager(cli, tmp_path)
    assert made.stop(SID) is True and made.stop(SID) is False
    cli.remove_container.assert_called_with(NAME, force=True)


def test_remove_volumes_removes_only_this_services_volumes(cli: Any, tmp_path: Any) -> None:
    cli.volumes.return_value = {"Volumes": [{"Name": f"{NAME}-bbbb"}, {"Name": f"x{NAME}-cccc"},
                                            {"Name": f"{NAME}-aaaa"}, {"Name": f"{NAME}0-dddd"}]}
    cli.remove_volume.side_effect = [None, not_found()]
    assert manager(cli, tmp_path).remove_volumes(SID) == [f"{NAME}-aaaa", f"{NAME}-bbbb"]
    cli.volumes.assert_called_once_with(filters={"name": f"{NAME}-"})
    assert [c.args[0] for c in cli.remove_volume.call_args_list] == [f"{NAME}-aaaa", f"{NAME}-bbbb"]


@pytest.mark.parametrize("answer", [None, {}, {"Volumes": None}])
def test_remove_volumes_with_none_found(cli: Any, tmp_path: Any, answer: Any) -> None:
    cli.volumes.return_value = answer
    assert manager(cli, tmp_path).remove_volumes(SID) == []


def test_a_volume_in_use_is_an_error_naming_it(cli: Any, tmp_path: Any) -> None:
    cli.volumes.return_value = {"Volumes": [{"Name": f"{NAME}-aaaa"}]}
    cli.remove_volume.side_effect = api_error(409, "volume is in use")
    with pytest.raises(ServiceError) as caught:
        manager(cli, tmp_path).remove_volumes(SID)
    assert str(caught.value) == f"cannot remove volume {NAME}-aaaa of {NAME}: volume is in use"


def test_logs_are_the_last_lines_or_empty(cli: Any, tmp_path: Any) -> None:
    cli.logs.side_effect = [b"one\ntwo \xff\n\n", api_error(404)]
    made = manager(cli, tmp_path)
    assert made.logs(SID, lines=7) == "one\ntwo \ufffd" and made.logs(SID) == ""
    assert cli.logs.call_args_list[0].args == (NAME,) and cli.logs.call_args_list[0].kwargs == {"tail": 7}


def test_list_managed_and_steps_read_labels_states_and_ages(cli: Any, tmp_path: Any, monkeypatch: Any) -> None:
    import time

    now = time.time()
    monkeypatch.setattr("clara_airflow.backends.docker.time.time", lambda: now)
    cli.containers.side_effect = [
        [{"Labels": {LABEL_ID: SID}, "State": "running", "Created": time.time() - 100},
         {"Labels": {LABEL_ID: "b" * 12}, "State": "exited"}],
        [{"Id": "s-1", "Names": ["/clara-x"], "Labels": {"clara-airflow/dag-id": "d", "clara-airflow/run-id": "r"},
          "State": "exited", "Created": time.time() - 50},
         {"Id": "s-2", "Labels": {}, "State": "running"}]]
    made = manager(cli, tmp_path)
    managed = made.list_managed()
    assert managed[SID].state == "running" and 99 < managed[SID].age < 110 and managed["b" * 12].age == now
    first, second = made.list_steps()
    assert (first.ref, first.name, first.dag_id, first.run_id, first.state) == ("s-1", "clara-x", "d", "r", "exited")
    assert 49 < first.age < 60
    assert (second.name, second.dag_id, second.run_id) == ("?", "", "") and second.age == now
    assert [c.kwargs for c in cli.containers.call_args_list] == [
        {"all": True, "filters": {"label": LABEL_ID}}, {"all": True, "filters": {"label": "clara-airflow/step"}}]


def test_remove_step_forgets_a_container_already_gone(cli: Any, tmp_path: Any) -> None:
    cli.remove_container.side_effect = [None, not_found()]
    made = manager(cli, tmp_path)
    made.remove_step("s-1")
    made.remove_step("s-1")
    cli.remove_container.assert_called_with("s-1", force=True)
