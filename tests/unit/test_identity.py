"""The deployment identity: what two deployments sharing one engine tell each other's containers apart by."""

from __future__ import annotations

import threading

import pytest

from clara_airflow.services import identity
from clara_airflow.services.identity import DEPLOYMENT_KEY, deployment_id, identified, is_foreign
from clara_airflow.settings import parse_deployment
from tests.helpers import make_options
from tests.memory import MemoryStore


@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "_RESOLVED", {})


def test_the_configured_id_wins_and_no_variable_is_written() -> None:
    store = MemoryStore()
    options = make_options({"deployment_id": "radiology-prod"})
    assert deployment_id(options, store) == "radiology-prod" and identified(options, store) is options
    assert store.writes == 0


def test_unset_it_is_made_once_per_metadata_database_and_read_back_by_every_process() -> None:
    store = MemoryStore()
    first = deployment_id(make_options(), store)
    assert len(first) == 12 and store.data[DEPLOYMENT_KEY] == first
    identity._RESOLVED.clear()  # another process (a worker, the CLI) on the same database
    assert deployment_id(make_options(), store) == first and store.writes == 1
    assert identified(make_options(), store).deployment.deployment_id == first


def test_two_first_writers_at_the_same_moment_agree_on_the_last_write() -> None:
    store, found = MemoryStore(delay=0.05), []

    def first_use() -> None:
        found.append(identity.deployment_id(make_options(), store))

    racers = [threading.Thread(target=first_use) for _ in range(2)]
    identity._RESOLVED.clear()
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(set(found)) == 1 and found[0] == store.data[DEPLOYMENT_KEY]


def test_a_garbage_variable_is_replaced_not_used_as_a_label() -> None:
    store = MemoryStore()
    store.data[DEPLOYMENT_KEY] = "x; rm -rf /"
    made = deployment_id(make_options(), store)
    assert made != "x; rm -rf /" and store.data[DEPLOYMENT_KEY] == made


def test_unlabelled_containers_made_before_identities_are_this_deployment_s() -> None:
    ours = make_options({"deployment_id": "ward-a"})
    assert [is_foreign(owner, ours) for owner in ("", "ward-a", "ward-b")] == [False, False, True]


@pytest.mark.parametrize("bad", ["Ward-A", "-ward", "ward a", "x" * 41, "ward/a"])
def test_a_deployment_id_that_is_not_a_label_value_is_refused_with_its_option_name(bad: str) -> None:
    deployment, problems = parse_deployment({"deployment_id": bad})
    assert deployment.deployment_id is None
    assert problems == [f"[clara] deployment_id = {bad!r}: must be 1-40 lower-case letters, digits, '.', '_' or "
                        "'-' (a label value), starting and ending with a letter or digit"]


def test_the_refusal_names_the_owner_and_the_exact_command_that_removes_a_leftover() -> None:
    from clara_airflow.backends.base import foreign_error

    docker = foreign_error("container", "clara-svc-0123456789ab", "ward-b")
    kube = foreign_error("Deployment", "clara-svc-0123456789ab", "ward-b")
    assert docker.startswith("the container clara-svc-0123456789ab on this engine belongs to another clara-airflow "
                             "deployment ('ward-b')")
    assert docker.endswith("(docker rm -f clara-svc-0123456789ab)")
    assert kube.endswith("(kubectl delete deployment,service clara-svc-0123456789ab)")


def test_the_variable_is_named_clara_deployment_id_and_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    store.set("clara_deployment_id", "ward-x")  # what an operator or another process wrote
    assert deployment_id(make_options(), store) == "ward-x"
    store.set("clara_deployment_id", "ward-y")
    assert deployment_id(make_options(), store) == "ward-x", "read once per process, then cached"
    assert identity._RESOLVED == {"id": "ward-x"}


def test_a_first_writer_waits_for_a_racer_then_reads_back_and_a_lost_write_is_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(identity.time, "sleep", slept.append)

    class DropsWrites(MemoryStore):
        def set(self, key: str, value: str) -> None:
            self.writes += 1

    store = DropsWrites()
    assert deployment_id(make_options(), store) == "unknown" and store.writes == 1
    assert slept == [0.2]


def test_the_owner_of_an_object_is_its_deployment_label() -> None:
    assert identity.owner_of({"clara-airflow/deployment": "ward-b", "other": "x"}) == "ward-b"
    assert identity.owner_of({"other": "x"}) == identity.owner_of({}) == identity.owner_of(None) == ""


def test_a_fresh_process_caches_the_id_in_the_module_itself() -> None:
    """Every other test replaces the cache; this one runs the module as a worker imports it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("from clara_airflow.services import identity\n"
            "from tests.helpers import make_options\n"
            "from tests.memory import MemoryStore\n"
            "store = MemoryStore()\nstore.set('clara_deployment_id', 'ward-q')\n"
            "print(identity.deployment_id(make_options(), store))\n"
            "store.set('clara_deployment_id', 'ward-r')\n"
            "print(identity.deployment_id(make_options(), store))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split() == ["ward-q", "ward-q"], done.stderr[-2000:]
