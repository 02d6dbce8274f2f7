"""Run priorities are strict: every task of a more urgent run outweighs every task of a less urgent one,
whatever the pipelines' shapes; within a level, Airflow's own order (more downstream first) holds."""

from __future__ import annotations

from itertools import combinations
from types import SimpleNamespace
from typing import Any

import pytest

from clara_airflow.priority import BAND, LEVELS, RunPriority, run_priority, weight


def shapes() -> dict[str, list[Any]]:
    """Real Airflow tasks: a chain of 40 steps, and a single leaf step."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, chain

    with DAG("chain-40", schedule=None):
        chained = [EmptyOperator(task_id=f"step{i:02d}") for i in range(40)]
        chain(*chained)
    with DAG("leaf", schedule=None):
        leaf = [EmptyOperator(task_id="only")]
    return {"chain": chained, "leaf": leaf}


def weights(tasks: list[Any], level: str) -> list[int]:
    rule = RunPriority()
    return [rule.get_weight(SimpleNamespace(task=t, run_id=f"dicom-{level}__p__1.2.3")) for t in tasks]


def test_every_task_of_a_more_urgent_run_outweighs_every_task_of_a_less_urgent_one() -> None:
    found = shapes()
    for low, high in combinations(LEVELS, 2):
        for a in found.values():
            for b in found.values():
                assert min(weights(b, high)) > max(weights(a, low)), (low, high)


def test_within_a_level_more_work_after_a_task_comes_first() -> None:
    chain = shapes()["chain"]
    for level in LEVELS:
        found = weights(chain, level)
        assert found == sorted(found, reverse=True) and len(set(found)) == 40, "Airflow's order: upstream first"
        assert found[-1] == weight(level, 0) and found[0] == weight(level, 39)


@pytest.mark.parametrize("level", LEVELS)
def test_a_huge_pipeline_stays_inside_its_band(level: str) -> None:
    index = LEVELS.index(level)
    assert index * BAND < weight(level, 0) <= weight(level, 10**9) < (index + 1) * BAND
    assert weight(LEVELS[-1], 10**9) < 2**31, "Airflow stores weights as 32-bit integers"


def test_the_level_comes_from_the_run_id_and_anything_else_is_normal() -> None:
    assert run_priority("dicom-immediate__ct__1.2.3") == "immediate"
    assert run_priority("manual__2026-01-01") == run_priority("dicom-bogus__ct__1.2") == "normal"
    assert run_priority("scheduled__2026") == "normal" and run_priority("") == "normal"


@pytest.mark.parametrize(("run_id", "level", "base"), [
    ("dicom-lower__mr__1.2", "lower", 0), ("dicom-normal__mr__1.2", "normal", 10_000),
    ("dicom-higher__mr__1.2", "higher", 20_000), ("dicom-immediate__mr__1.2", "immediate", 30_000),
    ("dicom-immediate", "immediate", 30_000),  # no "__" at all: the whole id is the head
])
def test_each_level_by_name_and_its_exact_weights(run_id: str, level: str, base: int) -> None:
    """The names the DICOM receiver writes, and the numbers Airflow stores (the docs quote them)."""
    assert run_priority(run_id) == level
    assert [weight(level, n) for n in (-3, 0, 1, 9_997, 9_998, 10**9)] == [
        base + 1, base + 1, base + 2, base + 9_998, base + 9_999, base + 9_999]


def test_a_task_instance_without_its_task_weighs_as_a_leaf() -> None:
    """Airflow may hand the strategy a task instance whose task is not loaded (a DAG version it lacks)."""
    ti = SimpleNamespace(task=None, run_id="dicom-higher__ct__1.2")
    assert RunPriority().get_weight(ti) == weight("higher", 0) == 20_001
    assert RunPriority().get_weight(SimpleNamespace(task=None, run_id=None)) == weight("normal", 0)
