"""The one place where clara-airflow touches Airflow API that is not the public Task SDK.

Every use says why, and since which Airflow version it holds. Code elsewhere calls these functions.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names that moved into the Task SDK (``airflow.sdk``) in Airflow 3.2; 3.1 has them in core. Read lazily
# (``from clara_airflow.airflow_compat import AirflowSkipException``), so importing this module never
# imports Airflow. name -> (home since 3.2, home in 3.1)
_MOVED = {
    "AirflowException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowFailException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "AirflowSkipException": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "ParamValidationError": ("airflow.sdk.exceptions", "airflow.exceptions"),
    "conf": ("airflow.sdk", "airflow.configuration"),
}


# Core names with no Task SDK home (checked on 3.1-3.3). name -> (module, why we need it)
_CORE = {
    # The documented base class of plugins; the Task SDK has none (the plugin registers our page and weights).
    "AirflowPlugin": ("airflow.plugins_manager", "plugins are core's public interface"),
    # The documented base of custom priority weight strategies (since 2.9), registered through plugins.
    "PriorityWeightStrategy": ("airflow.task.priority_strategy", "custom weight rules subclass it"),
    # The api-server's own permission check, so the plugin's routes need what Airflow's Variable routes
    # need (plugin apps are not covered by Airflow's auth). Internal to the api-server (since 3.0).
    "requires_access_variable": ("airflow.api_fastapi.core_api.security", "the plugin's routes check it"),
}


def __getattr__(name: str) -> Any:
    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name][0]), name)
        globals()[name] = value
        return value
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home, older = _MOVED[name]
    try:
        value = getattr(importlib.import_module(home), name)
    except (ImportError, AttributeError):  # Airflow 3.1
        value = getattr(importlib.import_module(older), name)
    globals()[name] = value  # resolved once: later imports (every DAG parse reads conf) skip this hook
    return value


GONE = "gone"  # the DAG run does not exist (deleted, or never created)
UNKNOWN = "unknown"  # the state could not be read (network, database, API server)
LIVE_STATES = ("queued", "running", UNKNOWN)  # a run that may still act: what it holds stays held
ENDED_STATES = ("success", "failed", GONE)  # a run that will never act again: what it holds may be freed


def dagbag(**kwargs: Any) -> Any:
    """An Airflow ``DagBag``, to parse a dags folder as Airflow does. Why here: ``DagBag`` is core, not SDK,
    in ``airflow.models.dagbag`` (3.0 to 3.1), then ``airflow.dag_processing.dagbag`` (3.2 on)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(**kwargs)


def max_map_length() -> int:
    """How many mapped task instances Airflow makes of one task at most (``[core] max_map_length``, 1024):
    a batch run never takes more studies. Why here: ``conf`` moved into the Task SDK in 3.2 (``_MOVED``)."""
    try:
        return max(1, int(__getattr__("conf").getint("core", "max_map_length", fallback=1024)))
    except (ValueError, TypeError):
        return 1024


def in_task() -> bool:
    """True inside a running task: it must use the SDK's Variable and run-state calls, other processes
    the metadata database. Why: ``task_runner.SUPERVISOR_COMMS`` is SDK module state (since 3.0)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


class _SdkStore:
    """Variables through the Task SDK (public: ``airflow.sdk.Variable``)."""

    def _variable(self) -> Any:
        from airflow.sdk import Variable

        return Variable

    def get(self, key: str) -> str | None:
        value: str | None = self._variable().get(key, default=None)
        return value

    def set(self, key: str, value: str) -> None:
        self._variable().set(key, value, description="clara-airflow record (a registry, not a lock)")

    def delete(self, key: str) -> None:
        self._variable().delete(key)

    def keys(self, prefix: str) -> list[str]:
        return list(self._variable().keys(prefix=prefix))


class _DatabaseStore(_SdkStore):
    """Variables in the metadata database, for the CLI and the api-server plugin.

    Why: outside a task there are no SDK comms; ``airflow.models.variable.Variable`` and
    ``create_session`` are core internals (stable since 2.x, checked on 3.3).
    """

    def _variable(self) -> Any:
        from airflow.models.variable import Variable

        return Variable

    def get(self, key: str) -> str | None:
        value: str | None = self._variable().get(key, default_var=None)
        return value

    def keys(self, prefix: str) -> list[str]:
        from airflow.utils.session import create_session

        variable = self._variable()
        with create_session() as session:
            rows = session.query(variable.key).filter(variable.key.startswith(prefix)).all()
        return [row[0] for row in rows]


def variable_store() -> Any:
    """The SDK's Variables inside a running task, the database's elsewhere."""
    return _SdkStore() if in_task() else _DatabaseStore()


def plain_state(state: Any) -> str:
    """Airflow's state value as plain text: ``"running"``, ``"success"``, ...; :data:`UNKNOWN` for None.

    Why: the Task SDK hands states back as its own ``DagRunState``/``TaskInstanceState`` enums (``str,
    Enum`` without a ``__str__`` of their own, so ``str()`` gives ``'DagRunState.RUNNING'``), core as its
    enums (whose ``str()`` is the value) or as plain strings, depending on the version and the caller.
    """
    if state is None:
        return UNKNOWN
    value = getattr(state, "value", state)
    return value if isinstance(value, str) else str(value)


def run_state(dag_id: str, run_id: str) -> str:
    """The DAG run's state as plain text (``"queued"``, ``"running"``, ``"success"``, ``"failed"``);
    :data:`GONE` when it does not exist; :data:`UNKNOWN` when it cannot be read.

    Only a state read from Airflow may release anything: a transient error is never taken for "ended".
    Why internal: inside a task ``RuntimeTaskInstance.get_dagrun_state`` (SDK, since 3.0) raises
    ``AirflowRuntimeError`` whose detail carries the API server's status (404: no such run); outside,
    ``DagRun.find`` is the core model's query (since 2.x).
    """
    try:
        if in_task():
            return _sdk_run_state(dag_id, run_id)
        from airflow.models.dagrun import DagRun

        runs = DagRun.find(dag_id=dag_id, run_id=run_id)
        return plain_state(runs[0].state) if runs else GONE
    except Exception:
        return UNKNOWN


def run_end(dag_id: str, run_id: str) -> tuple[str, float | None]:
    """(state as :func:`run_state` gives it, end date in epoch seconds or None), in one read, for retention.
    Why internal: in a task the supervisor's ``GetDagRun`` (Airflow 3.3; 3.1 has none: UNKNOWN, nothing is
    deleted); outside, ``DagRun.find``."""
    try:
        if in_task():
            from airflow.sdk.execution_time.comms import GetDagRun
            from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

            run: Any = SUPERVISOR_COMMS.send(GetDagRun(dag_id=dag_id, run_id=run_id))
        else:
            from airflow.models.dagrun import DagRun

            run = next(iter(DagRun.find(dag_id=dag_id, run_id=run_id)), None)
    except Exception as exc:
        return (GONE if _status_of(exc) == 404 else UNKNOWN), None
    if run is None:
        return GONE, None
    ended = getattr(run, "end_date", None)
    return plain_state(run.state), (ended.timestamp() if ended is not None else None)


def _sdk_run_state(dag_id: str, run_id: str) -> str:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        return plain_state(RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id))
    except Exception as exc:
        return GONE if _status_of(exc) == 404 else UNKNOWN


def _status_of(exc: Exception) -> int | None:
    """The HTTP status behind a failed Task SDK call, whichever way it arrives.

    Why: in a worker the supervisor turns the API client's ``ServerResponseError`` into an
    ``AirflowRuntimeError`` whose ``error.detail`` carries ``status_code`` (SDK 1.x); under ``dag.test()``
    the in-process channel lets the client's ``ServerResponseError`` (an ``httpx.HTTPStatusError``) through.
    """
    detail = getattr(getattr(exc, "error", None), "detail", None)
    if isinstance(detail, dict) and isinstance(detail.get("status_code"), int):
        return int(detail["status_code"])
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class QuotaClient:
    """Passes every call to docker's APIClient, adding a CPU quota and ``no-new-privileges`` to the
    host config (the provider's DockerOperator sets only CPU shares).

    Why internal: DockerOperator builds the host config in its private ``_run_image_with_mounts`` by
    calling ``self.cli.create_host_config(...)``; overriding the operator's ``cli`` property with this
    wrapper is the only hook (docker provider 4.x; ``tests/unit/test_airflow_compat.py`` fails if that
    call moves).
    """

    def __init__(self, client: Any, nano_cpus: int) -> None:
        self._client = client
        self._nano_cpus = nano_cpus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(nano_cpus=self._nano_cpus, security_opt=["no-new-privileges"],
                                               **kwargs)


def kpo_log_tail(operator: Any, lines: int) -> str:
    """What a failed KubernetesPodOperator's pod said, for the task's error: the termination message of
    a failed init container (the provider reports only the main container), else the main container's
    last log lines.

    Why internal: KPO keeps the pod it started in ``self.pod`` and its API client in ``self.client``
    (cncf-kubernetes 10.x); neither is a documented attribute.
    """
    pod = getattr(operator, "pod", None)
    if pod is None:
        return ""
    try:
        status = operator.client.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace).status
        for init in (status.init_container_statuses or []) if status else []:
            ended = init.state.terminated if init.state else None
            if ended is not None and ended.exit_code:
                return (f"\n--- init container {init.name} failed (exit code {ended.exit_code}) ---\n"
                        f"{(ended.message or ended.reason or '').rstrip()}")
        answer = operator.client.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace,
                                                         container=operator.base_container_name,
                                                         tail_lines=lines, _preload_content=False)
        text = answer.data.decode("utf-8", "replace")
    except Exception:
        return ""
    return f"\n--- last pod output ---\n{text.rstrip()}" if text else ""


def fix_dag_test_startup() -> bool:
    """Make ``dag.test()`` on Airflow 3.2 keep its in-process Execution API running.

    Why: 3.2's test supervisor builds an ``InProcessExecutionAPI``, takes its ``transport`` and drops the
    object. The app's lifespan (which registers the services every route needs) lives in that object's
    ``AsyncExitStack``; once it is collected the lifespan is closed, and every task's call fails with
    ``'State' object has no attribute 'svcs_registry'`` (also its start is not awaited). Airflow 3.3 ties
    the lifespan to the transport and waits for it; this does the same on 3.2 and nothing on other
    versions. Only test harnesses call it: a deployment's tasks talk to the api-server. True when patched.
    """
    from importlib.metadata import version

    if not version("apache-airflow-core").startswith("3.2."):
        return False
    import time

    from airflow.sdk.execution_time import supervisor

    started = supervisor.in_process_api_server

    def in_process_api_server() -> Any:
        api = started()
        api.transport._clara_api = api  # the transport (held by the task's client) keeps the lifespan
        deadline = time.monotonic() + 60
        while not hasattr(api.app.state, "svcs_registry"):
            if time.monotonic() > deadline:
                raise RuntimeError("Airflow's in-process Execution API did not start within 60 s; is "
                                   "[api_auth] jwt_secret set (AIRFLOW__API_AUTH__JWT_SECRET)?")
            time.sleep(0.01)
        return api

    supervisor.in_process_api_server = in_process_api_server  # type: ignore[assignment]
    return True
