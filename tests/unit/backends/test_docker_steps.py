"""docker_run(): a step container decided as data, without an engine or Airflow."""

from __future__ import annotations

from pathlib import Path

from clara_airflow.backends.base import ContainerMount
from clara_airflow.backends.docker_steps import docker_run
from clara_airflow.compiler.plan import MountPlan, Requests, StepPlan

STEP = StepPlan(name="seg", image="reg:5000/seg", tag="1.2", command=("run", "$(MODEL)", "$$(LIT)", "$(UNSET)"),
                variables=(("MODEL", "liver"),), requests=Requests(1, 64, 0), upstream=("read",),
                mounts=(MountPlan("/input", "payload", True), MountPlan("/prev", "upstream", True, operator="read"),
                        MountPlan("/output", "output", False, operator="seg", sub="mask"),
                        MountPlan("/cache", "volume", False, volume="clara-svc-abc-1234")))


def test_a_step_container_as_data(tmp_path: Path) -> None:
    (tmp_path / "read").mkdir()
    run = docker_run(STEP, {"MODEL": "liver"}, "/payloads/ct-1", tmp_path, dag_id="ct", run_id="manual__1",
                     try_number=2, user=(1000, 1001))
    assert run.image == "reg:5000/seg:1.2"
    assert run.command == ("run", "liver", "$(LIT)", "$(UNSET)")  # Kubernetes' $(NAME) rules
    assert run.mounts == (ContainerMount("/input", "/payloads/ct-1", "bind", True),
                          ContainerMount("/prev", str(tmp_path / "read"), "bind", True),
                          ContainerMount("/output", str(tmp_path / "seg" / "mask"), "bind", False),
                          ContainerMount("/cache", "clara-svc-abc-1234", "volume", False))
    assert run.labels == {"clara-airflow/dag-id": "ct", "clara-airflow/step": "seg",
                          "clara-airflow/run-id": "manual__1", "clara-airflow/run": tmp_path.name}
    assert run.name.startswith("clara-ct-seg-") and run.name.endswith("-2") and run.user == "1000:1001"
    other = docker_run(STEP, {}, "/p", tmp_path, dag_id="ct", run_id="manual__2", try_number=2, user=None)
    assert other.name != run.name and other.user is None, "every run and try gets its own container name"


def test_two_deployments_never_share_a_step_container_name(tmp_path: Path) -> None:
    """Staging beside production on one engine run the same DAG, and a scheduled run has the same run id in
    both: the deployment is part of the name, so neither takes the other's."""
    (tmp_path / "read").mkdir()

    def name(deployment: str | None, study: str = "") -> str:
        return docker_run(STEP, {}, "/p", tmp_path, dag_id="ct", run_id="scheduled__2026-12-07T00:00:00+00:00",
                          try_number=1, user=None, study=study, deployment=deployment).name

    assert len({name("ward-a"), name("ward-b"), name(None)}) == 3
    assert name("ward-a") == name("ward-a") and name("ward-a", "s1") != name("ward-a", "s2") != name("ward-a")
    assert name("ward-a").startswith("clara-ct-seg-") and name("ward-a").endswith("-1")
