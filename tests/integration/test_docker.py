"""Against the real Docker engine, through real Airflow (dag.test()): layout, shared services, races."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends.docker import LABEL_ID, DockerServiceManager
from clara_airflow.backends.layout import run_folder
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.compiler.identity import service_name
from clara_airflow.spec.load import load_pipeline
from tests.conftest import DAGS, OUTPUT, TEST_NETWORK
from tests.helpers import busybox_service, make_options

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run(dagbag: Any, dag_id: str, payload: Path, **conf: Any) -> Any:
    dag = dagbag.dags[dag_id]
    return dag.test(run_conf={"clara_payload": str(payload), **conf})


def states(dr: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def service_of(dag_id: str) -> str:
    from clara_airflow.spec.defaults import deployment_settings

    plan = compile_pipeline(load_pipeline(DAGS / f"{dag_id}.yaml"), deployment_settings(DAGS))
    (svc,) = plan.services
    return svc.id


@pytest.fixture(scope="module", autouse=True)
def _remove_test_services(docker_cli: Any) -> Any:
    yield
    for dag_id in ("it-shared",):
        with contextlib.suppress(Exception):
            docker_cli.containers.get(service_name(service_of(dag_id))).remove(force=True)


def test_fan_out_fan_in_writes_outputs_where_the_layout_says(dagbag: Any, payload: Path) -> None:
    dr = run(dagbag, "it-fan", payload)
    assert dr.state == "success", states(dr)
    folder = run_folder(str(OUTPUT), "it-fan", dr.run_id)
    assert (folder / ".clara-run-id").read_text() == dr.run_id
    assert (folder / "split" / "left" / "part.txt").read_text() == "chest CT, 24 slices\n"
    assert (folder / "split" / "right" / "part.txt").read_text() == "right\n"
    assert (folder / "work-left" / "result.txt").read_text() == "CHEST CT, 24 SLICES\n"
    # $(NAME) follows Kubernetes' rules: set names expand, unset stay, $$ escapes.
    assert (folder / "work-right" / "result.txt").read_text().splitlines() == [
        "hello", "$(UNSET_NAME)", "$(LITERAL)", "right"]
    merged = (folder / "merge" / "merged" / "merged.txt").read_text()
    assert merged == "CHEST CT, 24 SLICES\nhello\n$(UNSET_NAME)\n$(LITERAL)\nright\n"
    assert (folder / "merge" / "merged" / "payload-list.txt").read_text() == "study.txt\n"


def test_a_second_run_writes_its_own_folder(dagbag: Any, payload: Path) -> None:
    first = run(dagbag, "it-fan", payload)
    second = run(dagbag, "it-fan", payload)
    assert first.state == second.state == "success"
    one, two = (run_folder(str(OUTPUT), "it-fan", dr.run_id) for dr in (first, second))
    assert one != two and (one / "merge" / "merged" / "merged.txt").is_file()


def test_inputs_are_mounted_read_only(dagbag: Any, payload: Path) -> None:
    dr = run(dagbag, "it-readonly", payload)
    assert dr.state == "success", states(dr)
    folder = run_folder(str(OUTPUT), "it-readonly", dr.run_id)
    assert (folder / "first" / "payload-mount").read_text() == "read-only\n"
    assert (folder / "second" / "upstream-mount").read_text() == "read-only\n"
    assert not (payload / "written").exists() and not (folder / "first" / "written").exists()


def test_two_operators_share_one_service_and_reach_it(dagbag: Any, payload: Path, docker_cli: Any) -> None:
    dr = run(dagbag, "it-shared", payload)
    assert dr.state == "success", states(dr)
    folder = run_folder(str(OUTPUT), "it-shared", dr.run_id)
    sid = service_of("it-shared")
    uri_one = (folder / "ask-one" / "uri").read_text().strip()
    uri_two = (folder / "ask-two" / "uri").read_text().strip()
    assert uri_one == uri_two == f"clara-svc-{sid}:8080"
    for step in ("ask-one", "ask-two"):
        assert "clara-service-ok" in (folder / step / "answer").read_text()
    containers = docker_cli.containers.list(filters={"label": f"{LABEL_ID}={sid}"})
    assert len(containers) == 1
    assert TEST_NETWORK in containers[0].attrs["NetworkSettings"]["Networks"]
    assert containers[0].attrs["HostConfig"]["Privileged"] is False
    assert not containers[0].attrs["HostConfig"]["PortBindings"]


def test_second_run_reuses_the_service(dagbag: Any, payload: Path, docker_cli: Any) -> None:
    sid = service_of("it-shared")
    assert run(dagbag, "it-shared", payload).state == "success"
    first_id = docker_cli.containers.get(service_name(sid)).id
    dr = run(dagbag, "it-shared", payload)
    assert dr.state == "success"
    assert docker_cli.containers.get(service_name(sid)).id == first_id
    assert len(docker_cli.containers.list(all=True, filters={"label": f"{LABEL_ID}={sid}"})) == 1
    from clara_airflow.services.records import service_view

    record = service_view(sid).as_row()
    assert record["connections"] == {"WEB_URI": f"clara-svc-{sid}:8080", "OTHER_NAME": f"clara-svc-{sid}:8080"}
    assert record["pipelines"] == ["it-shared"] and record["host"] == f"clara-svc-{sid}"


def test_a_killed_service_is_replaced_on_the_next_run(dagbag: Any, payload: Path, docker_cli: Any) -> None:
    sid = service_of("it-shared")
    assert run(dagbag, "it-shared", payload).state == "success"
    old = docker_cli.containers.get(service_name(sid))
    old.kill()
    dr = run(dagbag, "it-shared", payload)
    assert dr.state == "success", states(dr)
    new = docker_cli.containers.get(service_name(sid))
    assert new.id != old.id and new.status == "running"


def test_failing_operator_log_shows_container_output(dagbag: Any, payload: Path, capfd: Any) -> None:
    dr = run(dagbag, "it-fail", payload)
    assert dr.state == "failed"
    out, err = capfd.readouterr()
    assert "clara-failure-marker-42" in out + err
    assert "operator 'breaks' (clara-airflow/busybox:1) failed" in out + err


def test_a_missing_image_says_how_to_get_it(dagbag: Any, payload: Path, capfd: Any) -> None:
    dr = run(dagbag, "it-missing-image", payload)
    assert dr.state == "failed"
    out, err = capfd.readouterr()
    assert "The image clara-airflow/never-built:0 is not on the Docker engine and could not be pulled" in out + err


def test_missing_payload_fails_clearly(dagbag: Any, tmp_path: Path, capfd: Any) -> None:
    dr = run(dagbag, "it-fail", tmp_path / "nope")
    assert dr.state == "failed"
    out, err = capfd.readouterr()
    assert "does not exist" in out + err


def _racer(token: str, network: str, barrier: Any, conflicts: Any, results: Any) -> None:
    """Imports and builds everything first, then waits with the others, then ensures at once."""
    import logging

    from tests.helpers import busybox_service

    svc = busybox_service(token, f"exec httpd -f -p 8090 -h /  # {token}", 8090, "race")
    manager = DockerServiceManager(make_options({"network": network, "services.data_dir": "/tmp/clara-race-data"}))
    manager.cli.ping()  # the client is connected before the start signal
    create = manager._create

    def counted(*args: Any, **kwargs: Any) -> bool:
        won = create(*args, **kwargs)
        if not won:  # HTTP 409: another racer's create won the name
            with conflicts.get_lock():
                conflicts.value += 1
        return won

    manager._create = counted  # type: ignore[method-assign]
    barrier.wait(timeout=120)
    instance = manager.ensure(svc, timeout=60, log=logging.getLogger("race"))
    results.put((instance.created, instance.ref))


def test_eight_concurrent_ensures_start_exactly_one_container(docker_cli: Any) -> None:
    import uuid

    token = uuid.uuid4().hex[:12]
    ctx = multiprocessing.get_context("spawn")
    barrier, conflicts, results = ctx.Barrier(8), ctx.Value("i", 0), ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(token, TEST_NETWORK, barrier, conflicts, results)) for _ in range(8)]
    try:
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=180) for _ in racers]
        for racer in racers:
            racer.join(timeout=30)
        assert sum(created for created, _ in outcomes) == 1
        assert len({ref for _, ref in outcomes}) == 1
        assert conflicts.value >= 1, "the racers never met at the create: the 409 path was not taken"
        assert len(docker_cli.containers.list(all=True, filters={"label": f"{LABEL_ID}={token}"})) == 1
    finally:
        for racer in racers:
            racer.kill()
        for c in docker_cli.containers.list(all=True, filters={"label": f"{LABEL_ID}={token}"}):
            c.remove(force=True)


def test_service_that_never_listens_fails_with_its_logs(docker_cli: Any) -> None:
    import logging
    import uuid

    from clara_airflow.errors import ServiceError

    token = uuid.uuid4().hex[:12]
    svc = busybox_service(token, "echo model-load-failed-marker; sleep 30", 8091, "deaf")
    manager = DockerServiceManager(make_options({"network": TEST_NETWORK, "services.data_dir": "/tmp/clara-race-data"}))
    try:
        with pytest.raises(ServiceError) as info:
            manager.ensure(svc, timeout=2, log=logging.getLogger("deaf"))
        assert "did not accept connections on port 8091" in str(info.value)
        assert "model-load-failed-marker" in str(info.value)
    finally:
        manager.stop(token)


def test_demo_pipeline_runs_end_to_end(dagbag: Any, docker_cli: Any, tmp_path: Path) -> None:
    from tests.conftest import REPO

    demo_plan = compile_pipeline(load_pipeline(REPO / "dags" / "pipelines" / "ct-organ-triage.yaml"))
    assert demo_plan.services[0].id != service_of("ct-organ-triage"), "tests must not touch the demo's service"
    payload = tmp_path / "ct"
    payload.mkdir()
    docker_cli.containers.run("clara-airflow/demo-ops:0.1", ["python3", "/opt/clara/ops/make_phantom.py", "/out"],
                              volumes={str(payload): {"bind": "/out", "mode": "rw"}}, remove=True)
    dr = run(dagbag, "ct-organ-triage", payload)
    try:
        assert dr.state == "success", states(dr)
        report = json.loads((run_folder(str(OUTPUT), "ct-organ-triage", dr.run_id) / "report" / "report.json").read_text())
        labels = {f["label"]: f for f in report["findings"]}
        assert set(labels) == {"bone", "lungs"}
        assert labels["bone"]["service"] == labels["lungs"]["service"]
        assert labels["lungs"]["volume_ml"] > labels["bone"]["volume_ml"] > 0
    finally:
        sid = service_of("ct-organ-triage") if (DAGS / "ct-organ-triage.yaml").exists() else None
        if sid:
            DockerServiceManager(make_options({})).stop(sid)


def test_a_service_found_on_another_network_is_attached_and_reused(docker_cli: Any) -> None:
    import logging
    import uuid

    token = uuid.uuid4().hex[:12]
    svc = busybox_service(token, "exec httpd -f -p 8092 -h /", 8092, "elsewhere")
    other = f"clara-airflow-test-{token[:6]}"
    first = DockerServiceManager(make_options({"network": other, "services.data_dir": "/tmp/clara-race-data"}))
    second = DockerServiceManager(make_options({"network": TEST_NETWORK, "services.data_dir": "/tmp/clara-race-data"}))
    try:
        started = first.ensure(svc, timeout=30, log=logging.getLogger("a"))
        found = second.ensure(svc, timeout=10, log=logging.getLogger("b"))
        assert started.created and not found.created and found.ref == started.ref
        networks = docker_cli.containers.get(service_name(token)).attrs["NetworkSettings"]["Networks"]
        assert {other, TEST_NETWORK} <= set(networks)
    finally:
        second.stop(token)
        docker_cli.networks.get(other).remove()


def test_volume_connection_shares_one_named_volume(dagbag: Any, payload: Path, docker_cli: Any) -> None:
    from clara_airflow.compiler.identity import volume_name

    dr = run(dagbag, "it-volume", payload)
    sid = service_of("it-volume")
    try:
        assert dr.state == "success", states(dr)
        folder = run_folder(str(OUTPUT), "it-volume", dr.run_id) / "read-store"
        assert (folder / "path").read_text().strip() == "/shared/store"
        assert (folder / "ready.txt").read_text() == "written-by-service\n"
        mounts = docker_cli.containers.get(service_name(sid)).attrs["Mounts"]
        assert volume_name(sid, "/shared/store") in {m.get("Name") for m in mounts}
        from clara_airflow.services.admin import stop_service

        assert stop_service(sid).endswith("record cleared")  # a plain stop keeps the data
        assert docker_cli.volumes.get(volume_name(sid, "/shared/store"))
        assert run(dagbag, "it-volume", payload).state == "success"
        said = stop_service(sid, volumes=True)
        assert said.endswith(f"; removed volume(s) {volume_name(sid, '/shared/store')}"), said
        assert not docker_cli.volumes.list(filters={"name": volume_name(sid, "/shared/store")})
    finally:
        DockerServiceManager(make_options({})).stop(sid)


def test_models_start_the_shared_inference_server(dagbag: Any, payload: Path) -> None:
    dr = run(dagbag, "it-models", payload)
    sid = service_of("it-models")
    try:
        assert dr.state == "success", states(dr)
        folder = run_folder(str(OUTPUT), "it-models", dr.run_id) / "ask-model" / "result"
        answer = json.loads((folder / "answer.json").read_text())
        assert answer["model_name"] == "liver" and answer["outputs"][0]["data"] == [3.0, 4.0]
        host = f"clara-svc-{sid}"
        assert (folder / "env.txt").read_text() == f"{host}:8000 {host}:8000"
    finally:
        DockerServiceManager(make_options({})).stop(sid)


def test_a_model_missing_from_the_repository_is_named(tmp_path: Path) -> None:
    import logging

    from clara_airflow.compiler.plan import Requests, ServicePlan
    from clara_airflow.errors import ServiceError
    from clara_airflow.spec.defaults import deployment_settings
    from tests.conftest import MODELS

    (svc,) = compile_pipeline(load_pipeline(DAGS / "it-models.yaml"), deployment_settings(DAGS)).services
    missing = ServicePlan(**{**svc.to_dict(), "requests": Requests(1, 512, 0), "models": ("liver", "pancreas")})
    manager = DockerServiceManager(make_options({"network": TEST_NETWORK, "services.data_dir": str(tmp_path)}))
    try:
        with pytest.raises(ServiceError, match=f"model 'pancreas' is not in the model repository {MODELS}"):
            manager.ensure(missing, timeout=30, log=logging.getLogger("models"))
    finally:
        manager.stop(svc.id)


def test_step_user_owns_the_outputs_on_the_host(airflow_db: None, payload: Path) -> None:
    """``[clara] step_user``: containers run as that user, and what they write on the host is theirs."""
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "AIRFLOW__CLARA__STEP_USER": "4321:4322", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run([str(bin_dir / "airflow"), "dags", "test", "it-fan", "-c",
                           json.dumps({"clara_payload": str(payload)})],
                          env=env, capture_output=True, text=True, timeout=300)
    assert "state=success" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    runs = sorted((OUTPUT / "it-fan").iterdir(), key=lambda p: p.stat().st_mtime)
    result = runs[-1] / "work-left" / "result.txt"
    assert result.read_text() == "CHEST CT, 24 SLICES\n"
    assert (result.stat().st_uid, result.stat().st_gid) == (4321, 4322)
    assert (runs[-1] / "merge" / "merged").stat().st_uid == 4321


def test_an_unreachable_engine_is_named_with_a_fix() -> None:
    from clara_airflow.errors import ServiceError
    from tests.helpers import busybox_service

    manager = DockerServiceManager(make_options({"docker_url": "unix:///nonexistent/docker.sock"}))
    with pytest.raises(ServiceError, match=r"the Docker engine at unix:///nonexistent/docker.sock does not answer"
                                           r".*\[clara\] docker_url"):
        manager.ensure(busybox_service("0123456789ab", "true", 80, "web"), timeout=5, log=None)


def test_a_step_over_its_timeout_fails_and_its_container_is_removed(dagbag: Any, payload: Path,
                                                                      docker_cli: Any) -> None:
    import time

    began = time.monotonic()
    dr = run(dagbag, "it-timeout", payload)
    assert dr.state == "failed" and time.monotonic() - began < 45
    assert dagbag.dags["it-timeout"].get_task("sleeps").execution_timeout.total_seconds() == 3
    assert docker_cli.containers.list(all=True, filters={"label": "clara-airflow/dag-id=it-timeout"}) == []


@pytest.mark.parametrize("payload_path", ["/etc", "/", "/var/run"])
def test_a_trigger_cannot_mount_host_folders(dagbag: Any, payload_path: str, capfd: Any) -> None:
    dr = run(dagbag, "it-fail", Path(payload_path))
    assert dr.state == "failed"
    out, err = capfd.readouterr()
    assert "clara-failure-marker-42" not in out + err, "the step must not start"
    assert "[clara] payload_root" in out + err or "is or contains" in out + err


def test_shell_characters_in_a_parameter_never_run(dagbag: Any, payload: Path, capfd: Any) -> None:
    dr = run(dagbag, "it-shell", payload, GREETING="hi; touch /output/pwned")
    assert dr.state == "failed"
    out, err = capfd.readouterr()
    assert "runs a shell" in out + err
    folder = run_folder(str(OUTPUT), "it-shell", dr.run_id)
    assert not (folder / "greets" / "pwned").exists()
    ok = run(dagbag, "it-shell", payload, GREETING="hi-there")
    assert ok.state == "success"
    assert (run_folder(str(OUTPUT), "it-shell", ok.run_id) / "greets" / "greeting.txt").read_text() == "hi-there\n"


def test_the_reaper_removes_step_containers_of_runs_that_ended(docker_cli: Any, airflow_db: None) -> None:
    from clara_airflow.backends.docker import LABEL_DAG, LABEL_RUN_ID, LABEL_STEP
    from clara_airflow.services.admin import collect_steps

    labels = {LABEL_DAG: "it-fail", LABEL_RUN_ID: "manual__worker-killed", LABEL_STEP: "breaks",
              "clara-airflow/test": "1"}
    left = docker_cli.containers.create("clara-airflow/busybox:1", ["true"], labels=labels)
    try:
        assert not any(left.name in line for line in collect_steps(grace=3600)), "young ones get a grace period"
        report = collect_steps(grace=0)  # no such run any more: it is gone
        assert f"removed step container {left.name} (created) of it-fail/manual__worker-killed (run gone)" in report
        assert docker_cli.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}=manual__worker-killed"}) == []
    finally:
        with contextlib.suppress(Exception):
            left.remove(force=True)


def test_another_deployment_s_containers_on_the_same_engine_are_listed_and_never_touched(
        docker_cli: Any, airflow_db: None) -> None:
    """Two deployments on one engine (a test and a production Airflow): this one's reaper, list, stop and
    ensure see the other's service and step containers by their deployment label, and leave them be."""
    import logging
    import uuid

    from clara_airflow.backends.base import LABEL_DEPLOYMENT, LABEL_MANAGED
    from clara_airflow.backends.docker import LABEL_DAG, LABEL_RUN_ID, LABEL_STEP
    from clara_airflow.errors import ClaraAirflowError, ServiceError
    from clara_airflow.services.admin import collect_services, list_services, stop_service

    token, other = uuid.uuid4().hex[:12], "ward-b"
    service = docker_cli.containers.create(
        "clara-airflow/busybox:1", ["sleep", "600"], name=service_name(token),
        labels={LABEL_ID: token, LABEL_MANAGED: "true", LABEL_DEPLOYMENT: other, "clara-airflow/test": "1"})
    step = docker_cli.containers.create(
        "clara-airflow/busybox:1", ["true"], labels={LABEL_DAG: "it-fail", LABEL_RUN_ID: f"manual__{token}",
                                                     LABEL_STEP: "breaks", LABEL_DEPLOYMENT: other,
                                                     "clara-airflow/test": "1"})
    try:
        row = next(r for r in list_services() if r["id"] == token)
        assert row["foreign"] == other and "foreign: deployment ward-b" in row["state"] and not row.get("orphan")

        report = collect_services(remove_orphans=True, ttl_override=0)
        assert f"leaving {service_name(token)} alone: it belongs to deployment 'ward-b'" in report
        from clara_airflow.services.admin import collect_steps
        assert not any(step.name in line for line in collect_steps(grace=0)), "another deployment's step"
        with pytest.raises(ClaraAirflowError, match="belongs to another clara-airflow deployment") as refused:
            stop_service(token, force=True)
        assert f"docker rm -f {service_name(token)}," in str(refused.value)  # the way out when ward-b is gone

        manager = DockerServiceManager(make_options({"network": TEST_NETWORK, "deployment_id": "ward-a",
                                                     "services.data_dir": "/tmp/clara-race-data"}))
        svc = busybox_service(token, "exec httpd -f -p 8092 -h /", 8092, "foreign")
        with pytest.raises(ServiceError, match=r"belongs to another clara-airflow deployment \('ward-b'\)") as refused:
            manager.ensure(svc, timeout=10, log=logging.getLogger("foreign"))
        assert str(refused.value).endswith(f"remove its leftover yourself (docker rm -f {service_name(token)})")
        with pytest.raises(ServiceError, match="give each deployment its own Docker engine"):
            manager.stop(token)
        for kept in (service, step):
            kept.reload()  # raises NotFound if anything above removed it
    finally:
        for container in (service, step):
            with contextlib.suppress(Exception):
                container.remove(force=True)


def test_another_deployment_s_step_of_the_same_run_id_takes_no_name_this_run_needs(
        dagbag: Any, payload: Path, docker_cli: Any, capfd: Any) -> None:
    """Staging beside production on one engine run the same DAG, and a scheduled run has the same run id in
    both (a metadata database made anew repeats manual ones too). The other deployment's step container of
    that run, still running, takes no name this run needs. A leftover of this deployment's own try is
    named in the task's failure, with the way out."""
    from datetime import datetime

    from clara_airflow.backends.docker_steps import docker_run
    from clara_airflow.services.identity import deployment_id
    from clara_airflow.spec.defaults import deployment_settings

    (step, _) = compile_pipeline(load_pipeline(DAGS / "it-readonly.yaml"), deployment_settings(DAGS)).steps

    def name(deployment: str, when: datetime) -> str:
        return docker_run(step, {}, str(payload), payload, dag_id="it-readonly", run_id=f"manual__{when.isoformat()}",
                          try_number=1, user=None, deployment=deployment).name

    this = deployment_id(make_options())
    first, second = (datetime(2026, 1, 2, 3, 4, second, tzinfo=UTC) for second in (5, 6))
    made = [docker_cli.containers.run("clara-airflow/busybox:1", ["sleep", "600"], name=name(owner, when),
                                      detach=True, labels={"clara-airflow/test": "1"})
            for owner, when in (("ward-b", first), (this, second))]
    try:
        dr = dagbag.dags["it-readonly"].test(run_after=first, logical_date=first,
                                             run_conf={"clara_payload": str(payload)})
        assert (dr.run_id, dr.state) == (f"manual__{first.isoformat()}", "success"), states(dr)
        made[0].reload()
        assert made[0].status == "running", "the other deployment's container was touched"
        capfd.readouterr()
        dr = dagbag.dags["it-readonly"].test(run_after=second, logical_date=second,
                                             run_conf={"clara_payload": str(payload)})
        assert dr.state == "failed"
        out, err = capfd.readouterr()
        assert f"A container named {made[1].name} is left from an earlier start of this same try" in out + err
        assert f"remove it (docker rm -f {made[1].name}) and clear this task" in out + err
    finally:
        for container in made:
            with contextlib.suppress(Exception):
                container.remove(force=True)


def _networks(docker_cli: Any, name: str) -> list[Any]:
    return [net for net in docker_cli.networks.list(names=[name]) if net.name == name]


def test_networks_a_create_race_duplicated_are_collapsed_to_the_one_in_use(docker_cli: Any) -> None:
    """Docker 20.10 lets two creates of one name at the same moment both succeed (seen on the cluster's
    first runs); the name is then ambiguous for every container. ensure_network keeps the network that
    has containers, else the oldest, and removes the others."""
    import uuid

    from clara_airflow.backends.docker_engine import ensure_network

    name = f"clara-dup-{uuid.uuid4().hex[:8]}"
    api = docker_cli.api
    older = api.create_network(name, driver="bridge", check_duplicate=False)["Id"]
    newer = api.create_network(name, driver="bridge", check_duplicate=False)["Id"]
    third = api.create_network(name, driver="bridge", check_duplicate=False)["Id"]
    box = docker_cli.containers.run("clara-airflow/busybox:1", ["sleep", "60"], detach=True,
                                    labels={"clara-airflow/test": "1"})  # the session's clean-up finds it
    try:
        api.connect_container_to_network(box.id, newer)
        ensure_network(api, name)
        assert [net.id for net in _networks(docker_cli, name)] == [newer]
        box.remove(force=True)
        extra = api.create_network(name, driver="bridge", check_duplicate=False)["Id"]
        ensure_network(api, name)  # none in use: the oldest stays
        assert [net.id for net in _networks(docker_cli, name)] == [newer]
        ran = docker_cli.containers.run("clara-airflow/busybox:1", ["true"], network=name, remove=True)
        assert ran == b""
    finally:
        with contextlib.suppress(Exception):
            box.remove(force=True)
        for net in _networks(docker_cli, name):
            net.remove()
    assert {older, third, extra}.isdisjoint(net.id for net in docker_cli.networks.list())


def test_eight_concurrent_first_uses_leave_one_network(docker_cli: Any) -> None:
    import threading
    import uuid

    import docker

    from clara_airflow.backends.docker_engine import ensure_network

    name = f"clara-race-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def first_use() -> None:
        cli = docker.from_env().api  # a client (a connection pool) per racer, as per task
        barrier.wait(timeout=60)
        try:
            ensure_network(cli, name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors
        assert len(_networks(docker_cli, name)) == 1
    finally:
        for net in _networks(docker_cli, name):
            net.remove()
