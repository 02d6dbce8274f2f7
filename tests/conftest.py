"""Test environment: a throw-away AIRFLOW_HOME and dags folder, set before anything imports Airflow.

The dags folder holds the repository's loader, the demo pipeline and tests/fixtures/dags/*.yaml.
Markers: ``docker`` tests are skipped when no Docker engine answers, so plain pytest is green anywhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.lifecycle"]  # the `store` fixture of the service lifecycle tests
# One test home per session: processes the tests start (spawned racers, `airflow dags test`) import this
# module too, and reuse the home instead of leaving a new /tmp folder each.
_INHERITED = os.environ.get("CLARA_TEST_HOME")
HOME = Path(_INHERITED) if _INHERITED else Path(tempfile.mkdtemp(prefix="clara-airflow-test-"))
DAGS = HOME / "dags"
OUTPUT = HOME / "output"
MODELS = HOME / "models"
TEST_NETWORK = "clara-airflow-test"
# The demo pipeline under test gets a service identity of its own (an extra argument the stub ignores),
# so the tests never stop, or move to their network, the service that `scripts/demo.sh` started.
TEST_SERVICE_ARG = '"--model-repository=/opt/models", "--clara-test-identity"]'


def _make_home() -> None:
    DAGS.mkdir()
    HOME.chmod(0o755)  # service containers run as nobody and read the model repository below it
    for model in ("liver", "spleen"):
        (MODELS / model).mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", DAGS)
    for source in (REPO / "dags" / "pipelines").glob("*.yaml"):
        text = source.read_text().replace('"--model-repository=/opt/models"]', TEST_SERVICE_ARG)
        (DAGS / source.name).write_text(text)
    for source in (REPO / "tests" / "fixtures" / "dags").glob("*.yaml"):
        (DAGS / source.name).write_text(source.read_text().replace("@HOME@", str(HOME)))
    for source in (REPO / "tests" / "fixtures" / "dags").glob("clara_probe_*.py"):
        shutil.copy(source, DAGS)  # Python DAGs whose tasks probe what Airflow's runtime hands us


if not _INHERITED:
    _make_home()
os.environ.update({
    "CLARA_TEST_HOME": str(HOME),
    "AIRFLOW_HOME": str(HOME), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    "AIRFLOW__CLARA__OUTPUT_ROOT": str(OUTPUT), "AIRFLOW__CLARA__NETWORK": TEST_NETWORK,
    "AIRFLOW__CLARA__PAYLOAD_ROOT": tempfile.gettempdir(),  # pytest's tmp_path folders are payloads too
    "AIRFLOW__CLARA__SERVICES_DATA_DIR": str(HOME / "service-data"),
    "AIRFLOW__CLARA__SERVICES_START_TIMEOUT": "60", "AIRFLOW__CLARA__SERVICE_HEARTBEAT": "1",
    "AIRFLOW__CLARA__MODELS_IMAGE": "clara-airflow/kserve-stub", "AIRFLOW__CLARA__MODELS_TAG": "0.1",
    "AIRFLOW__CLARA__MODELS_REPOSITORY": str(MODELS), "AIRFLOW__CLARA__MODELS_REQUESTS_GPU": "0",
    # One key for every process of the session: `airflow dags test` subprocesses share the Variables.
    "AIRFLOW__CORE__FERNET_KEY": "k0ZJWQe3m3Ch5tXa2mK1M0ZbqkT9lq9q3uWbW9oS1zA=",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "tests.sqlite_args.CONNECT_ARGS",
    # Airflow 3.2's in-process Execution API (dag.test) does not make one up, and without it its startup
    # fails silently: every task then fails on 'State' object has no attribute 'svcs_registry'.
    "AIRFLOW__API_AUTH__JWT_SECRET": os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_hex(32),
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
})


from clara_airflow.airflow_compat import fix_dag_test_startup  # noqa: E402

fix_dag_test_startup()  # Airflow 3.2 only: dag.test() drops its in-process Execution API mid-run


try:  # CI runs the same examples every time; developers' runs keep exploring new ones
    from hypothesis import settings as _hypothesis

    _hypothesis.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis.load_profile("ci")
except ImportError:
    pass


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: Any) -> None:
    """SIGTERM (scripts/test.sh stopping one lane when the other failed, or a CI time-out) ends the run as
    Ctrl-C does, so the fixtures' teardown stops what they started. An ``airflow standalone`` runs in a
    session of its own: killed pytest, it lived on, with its scheduler, reaper and step containers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if any("docker" in item.keywords for item in items) and not docker_available():
        if os.environ.get("CI"):  # CI must never pass by skipping: the engine is part of the test rig
            raise pytest.UsageError("CI=true but no Docker engine answers; scripts/setup.sh starts one")
        skip = pytest.mark.skip(reason="no Docker engine answers (scripts/setup.sh starts one)")
        for item in items:
            if "docker" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    from airflow.utils import db

    db.resetdb()
    yield


@pytest.fixture(scope="session", autouse=True)
def _remove_test_home() -> Iterator[None]:
    yield
    if not _INHERITED:
        shutil.rmtree(HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db: None) -> Any:
    from clara_airflow.airflow_compat import dagbag

    return dagbag(dag_folder=str(DAGS))


@pytest.fixture(scope="session")
def docker_cli() -> Iterator[Any]:
    import docker

    client = docker.from_env()
    yield client
    # Whatever the tests made: labelled test containers, step containers of the test DAGs (a killed
    # worker leaves its step behind), and service containers on the test network (never the demo's).
    test_dags = {p.stem for folder in (DAGS, REPO / "tests" / "fixtures" / "scheduler") for p in folder.glob("*.yaml")}
    for container in client.containers.list(all=True):
        labels = container.labels or {}
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if ("clara-airflow/test" in labels or labels.get("clara-airflow/dag-id") in test_dags
                or ("clara-airflow/service-id" in labels and TEST_NETWORK in networks)):
            container.remove(force=True)


@pytest.fixture(scope="session")
def payload() -> Path:
    folder = HOME / "payload"
    folder.mkdir(exist_ok=True)
    (folder / "study.txt").write_text("chest CT, 24 slices\n")
    return folder
