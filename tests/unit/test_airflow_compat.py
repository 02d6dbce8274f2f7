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
