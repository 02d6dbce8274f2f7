"""How a Docker container gets its GPUs: the [clara] options, the two assignment modes, a service's own
device, and a request the host can never satisfy refused where it is written."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.docker_gpus import LABEL_GPUS, VISIBLE, container_gpus
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.compiler.plan import Requests
from clara_airflow.errors import SpecError
from clara_airflow.settings import Deployment, parse_deployment
from clara_airflow.spec.load import load_pipeline
from tests.helpers import write
from tests.unit.backends.test_docker_manager_rules import NAME, cli, info, manager, not_found, plan  # noqa: F401

PIPELINE = """\
api-version: 0.4.0
name: gpu-p
operators:
- name: seg
  container: {{image: clara-airflow/busybox, tag: "1"}}
  requests:
    gpu: {step}
  services:
  - name: triton
    container: {{image: clara-airflow/busybox, tag: "1", command: [serve]}}
    requests: {{gpu: {service}}}
    connections: {{http: [{{name: URI, port: 8000}}]}}
"""


def test_the_gpu_options_are_parsed_and_checked() -> None:
    found, problems = parse_deployment({"gpus": " 0, 1 ,GPU-8f2c1d2e-aaaa", "gpu_assignment": "visible_devices",
                                        "gpu_state_dir": "/srv/gpus"})
    assert problems == []
    assert (found.gpus, found.gpu_assignment, found.gpu_state_dir) == (("0", "1", "GPU-8f2c1d2e-aaaa"),
                                                                       "visible_devices", "/srv/gpus")
    assert parse_deployment({"gpus": "AUTO"})[0].gpus == ("auto",)
    assert parse_deployment({"gpus": ""})[0].gpus == ()
    _, problems = parse_deployment({"gpus": "0;1,$(rm)", "gpu_assignment": "count", "gpu_state_dir": "gpus"})
    assert problems == [
        "[clara] gpus = '0;1,$(rm)': must be 'auto' or GPU indices or UUIDs separated by commas, like 0,1 or "
        "GPU-8f2c...; not '0;1', '$(rm)'",
        "[clara] gpu_assignment = 'count': must be device_requests (Docker's --gpus) or visible_devices "
        "(NVIDIA_VISIBLE_DEVICES, for engines whose default runtime is nvidia)",
        "[clara] gpu_state_dir = 'gpus': must be an absolute folder path"]
    assert parse_deployment({"gpus": "0,0"})[1] == ["[clara] gpus = '0,0': lists a GPU twice"]


def test_device_requests_name_the_devices_and_visible_devices_sets_the_variable() -> None:
    requests, env, labels = container_gpus(Deployment(gpus=("0", "1")), ["1"], 1)
    assert [(r["DeviceIDs"], r["Capabilities"], r["Count"]) for r in requests] == [(["1"], [["gpu"]], 0)]
    assert (env, labels) == ({}, {LABEL_GPUS: "1"})
    visible = Deployment(gpus=("0", "1"), gpu_assignment="visible_devices")
    assert container_gpus(visible, ["0", "1"], 2) == ([], {VISIBLE: "0,1"}, {LABEL_GPUS: "0,1"})
    assert container_gpus(visible, [], 0) == ([], {VISIBLE: "void"}, {})  # not the CUDA image's own "all"
    assert container_gpus(Deployment(gpus=("0",)), [], 0) == ([], {}, {})


def test_without_an_inventory_the_engine_picks_as_before_and_it_is_said_once(caplog: Any, monkeypatch: Any) -> None:
    import clara_airflow.backends.docker_gpus as module

    monkeypatch.setattr(module, "_WARNED", [])
    with caplog.at_level(logging.WARNING, logger="clara_airflow.gpus"):
        requests, env, labels = container_gpus(Deployment(), None, 2)
        container_gpus(Deployment(), None, 1)
    assert [(r["Count"], r["DeviceIDs"]) for r in requests] == [(2, [])] and env == labels == {}
    assert caplog.text.count("[clara] gpus is not set") == 1
    assert container_gpus(Deployment(), None, 0) == ([], {}, {})


def test_a_service_takes_its_own_device_and_hands_it_to_its_container(cli: Any, tmp_path: Path, caplog: Any) -> None:  # noqa: F811
    log = logging.getLogger("test.svc")
    state = tmp_path / "gpus"
    cli.inspect_container.side_effect = [not_found(), info(Config={"Labels": {LABEL_GPUS: "0"}})]
    with caplog.at_level(logging.INFO, logger="test.svc"):
        found = manager(cli, tmp_path, gpus=("0", "1"), gpu_assignment="visible_devices",
                        gpu_state_dir=str(state)).ensure(plan(requests=Requests(1, 512, 1)), timeout=5, log=log)
    kwargs = cli.create_container.call_args.kwargs
    assert kwargs["environment"][VISIBLE] == "0" and kwargs["labels"][LABEL_GPUS] == "0"
    assert cli.create_host_config.call_args.kwargs["device_requests"] == []
    assert found.devices == ("0",)
    held = json.loads((state / "holders.json").read_text())
    assert {d: (h["container"], h["service"], h["pid"]) for d, h in held.items()} == {"0": (NAME, plan().id, 0)}
    assert f"GPU(s) 0 of this host are service {NAME}'s until it is stopped" in caplog.text


def test_a_service_that_cannot_start_gives_its_device_back(cli: Any, tmp_path: Path) -> None:  # noqa: F811
    from docker.errors import APIError

    cli.inspect_container.side_effect = [not_found(), not_found()]
    cli.create_container.side_effect = APIError("bad", explanation="no such runtime")
    with pytest.raises(Exception, match="no such runtime"):
        manager(cli, tmp_path, gpus=("0",), gpu_state_dir=str(tmp_path / "gpus")).ensure(
            plan(requests=Requests(1, 512, 1)), timeout=5, log=logging.getLogger("t"))
    assert json.loads((tmp_path / "gpus" / "holders.json").read_text()) == {}


def test_a_request_above_the_listed_gpus_is_refused_at_requests_gpu(tmp_path: Path) -> None:
    path = write(tmp_path, PIPELINE.format(step=3, service=2))
    with pytest.raises(SpecError) as caught:
        compile_pipeline(load_pipeline(path), gpus=2)
    text = str(caught.value)
    assert f"{path}:7:10: operator 'seg' requests 3 GPU(s), but a Docker host here has 2 ([clara] gpus)" in text
    assert "service 'triton'" not in text  # 2 of 2 fit
    with pytest.raises(SpecError, match=r":11:21: service 'triton' of operator 'seg' requests 2 GPU"):
        compile_pipeline(load_pipeline(write(tmp_path, PIPELINE.format(step=1, service=2))), gpus=1)
    compile_pipeline(load_pipeline(path), gpus=None)  # auto or unset: checked at run time
    compile_pipeline(load_pipeline(path), {"backend": "kubernetes", "payload.claim": "c"}, gpus=1)  # scheduled
