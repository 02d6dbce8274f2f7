"""Contract tests for the non-public Airflow and provider API that airflow_compat.py relies on: each
fails loudly when an upgrade moves what we depend on."""

from __future__ import annotations

import inspect


def test_docker_operator_builds_its_host_config_through_self_cli() -> None:
    from airflow.providers.docker.operators.docker import DockerOperator

    source = inspect.getsource(DockerOperator._run_image_with_mounts)
    assert "self.cli.create_host_config(" in source, "QuotaClient's hook is gone: update airflow_compat.QuotaClient"
    assert isinstance(inspect.getattr_static(DockerOperator, "cli"), property)


def test_quota_client_adds_the_quota_and_no_new_privileges() -> None:
    from unittest.mock import MagicMock

    from clara_airflow.airflow_compat import QuotaClient

    client = MagicMock()
    QuotaClient(client, 2 * 10**9).create_host_config(network_mode="n")
    client.create_host_config.assert_called_once_with(nano_cpus=2 * 10**9, security_opt=["no-new-privileges"],
                                                      network_mode="n")


def test_kpo_keeps_its_pod_and_client_where_kpo_log_tail_reads_them() -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    source = inspect.getsource(KubernetesPodOperator)
    assert "self.pod = " in source or "self.pod: " in source
    assert isinstance(inspect.getattr_static(KubernetesPodOperator, "client"), property) or "def client" in source


def test_the_sdk_run_state_call_exists() -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    assert callable(RuntimeTaskInstance.get_dagrun_state)


def test_kpo_log_tail_says_why_an_init_container_failed_else_shows_the_last_lines() -> None:
    from unittest.mock import MagicMock

    from kubernetes.client import models as k8s

    from clara_airflow.airflow_compat import kpo_log_tail

    def status(code: int) -> k8s.V1PodStatus:
        ended = k8s.V1ContainerStateTerminated(exit_code=code, message="input payload /x is not a folder")
        return k8s.V1PodStatus(init_container_statuses=[k8s.V1ContainerStatus(
            name="clara-prepare-output", state=k8s.V1ContainerState(terminated=ended), image="", image_id="",
            ready=False, restart_count=0)])

    operator = MagicMock(base_container_name="base")
    operator.pod.metadata.name, operator.pod.metadata.namespace = "p", "ns"
    operator.client.read_namespaced_pod.return_value = k8s.V1Pod(status=status(2))
    assert kpo_log_tail(operator, 20) == ("\n--- init container clara-prepare-output failed (exit code 2) ---\n"
                                          "input payload /x is not a folder")
    operator.client.read_namespaced_pod.return_value = k8s.V1Pod(status=status(0))
    operator.client.read_namespaced_pod_log.return_value.data = b"step said this\n"
    assert kpo_log_tail(operator, 20) == "\n--- last pod output ---\nstep said this"
    operator.pod = None
    assert kpo_log_tail(operator, 20) == ""


def test_crypto_problem_agrees_with_airflows_own_fernet() -> None:
    """The real boundary: whatever Airflow and cryptography this venv has (the matrix runs 3.1, 3.2, 3.3),
    crypto_problem() says there is a problem exactly when Airflow's get_fernet cannot encrypt."""
    import os
    from unittest.mock import patch

    from airflow.models import crypto

    from clara_airflow.versions import crypto_problem

    crypto.get_fernet.cache_clear() if hasattr(crypto.get_fernet, "cache_clear") else None
    with patch.dict(os.environ, {"AIRFLOW__CORE__FERNET_KEY": "k0ZJWQe3m3Ch5tXa2mK1M0ZbqkT9lq9q3uWbW9oS1zA="}):
        try:
            works = crypto.get_fernet().decrypt(crypto.get_fernet().encrypt(b"x")) == b"x"
        except AttributeError:
            works = False
    assert (crypto_problem() is None) == works, crypto_problem()


def test_crypto_problem_names_airflow_3_1_with_cryptography_51_and_the_fix() -> None:
    from unittest.mock import patch

    from clara_airflow.versions import crypto_problem

    def versions(table: dict[str, str]):  # type: ignore[no-untyped-def]
        return patch("importlib.metadata.version", side_effect=lambda name: table[name])

    with versions({"apache-airflow-core": "3.1.8", "cryptography": "51.0.1"}):
        problem = crypto_problem()
    assert problem is not None and "cryptography<51" in problem and "3.1.8" in problem and "51.0.1" in problem
    for airflow, cryptography in (("3.1.8", "50.0.2"), ("3.2.2", "51.0.1"), ("3.3.2", "52.0"), ("3.1.0rc1", "46.0.7")):
        with versions({"apache-airflow-core": airflow, "cryptography": cryptography}):
            assert crypto_problem() is None, (airflow, cryptography)


def test_a_missing_run_is_gone_whichever_way_the_sdk_reports_the_404() -> None:
    """A worker's supervisor wraps the API's 404 in AirflowRuntimeError; dag.test() lets the client's
    ServerResponseError through (tests/integration/test_runtime.py covers that one in a real task)."""
    import httpx
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    from clara_airflow.airflow_compat import _status_of

    wrapped = AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR,
                                                detail={"status_code": 404, "message": "Server returned error"}))
    request = httpx.Request("GET", "http://api/execution/dag-runs/d/r/state")
    direct = ServerResponseError("Server returned error", request=request, response=httpx.Response(404, request=request))
    lost = AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR,
                                             detail={"status_code": None, "message": "ConnectError"}))
    assert (_status_of(wrapped), _status_of(direct), _status_of(lost), _status_of(ValueError())) == (404, 404, None, None)


def test_states_from_the_task_sdk_core_and_plain_text_all_read_as_airflow_s_values() -> None:
    """Inside a task the SDK hands back its own enums, whose str() is 'DagRunState.RUNNING': the
    ledger and the leases compare plain values, so every form must come out as 'running'."""
    from airflow.sdk.api.datamodels._generated import DagRunState as SdkRunState
    from airflow.sdk.api.datamodels._generated import TaskInstanceState as SdkTaskState
    from airflow.utils.state import DagRunState, TaskInstanceState

    from clara_airflow.airflow_compat import ENDED_STATES, LIVE_STATES, UNKNOWN, plain_state

    assert str(SdkRunState.RUNNING) != "running", "the SDK's enum str() changed; plain_state may be simpler now"
    for state in (SdkRunState.RUNNING, DagRunState.RUNNING, "running"):
        read = plain_state(state)
        assert read == "running" and type(read) is str and read in LIVE_STATES
    assert plain_state(SdkTaskState.UPSTREAM_FAILED) == plain_state(TaskInstanceState.UPSTREAM_FAILED) == "upstream_failed"
    assert [plain_state(s) for s in (SdkRunState.SUCCESS, SdkRunState.FAILED)] == ["success", "failed"]
    assert all(plain_state(s) in ENDED_STATES for s in (SdkRunState.SUCCESS, SdkRunState.FAILED))
    assert plain_state(None) == UNKNOWN
