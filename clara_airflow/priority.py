"""Run priority for Airflow's scheduler: a priority weight strategy that reads the run's priority from its
run id (``dicom-<priority>__...``, as the DICOM receiver names its runs).

Airflow computes a task instance's ``priority_weight`` once, when the run's task instances are created,
from the task's ``weight_rule``; the scheduler then hands queued task instances to free slots highest
weight first. The run's conf is not reachable at that moment (the run is not yet committed), so the
receiver puts the priority into the run id, which is, and into the conf, for people to read.

The weights are **strict bands**: every task of a more urgent run outweighs every task of a less urgent
run, whatever the shapes of the two pipelines. Inside its band a task weighs ``1 + downstream`` (Airflow's
default order: more work after it, earlier), capped so that it never reaches the next band.

Registered by the plugin (:class:`clara_airflow.plugin.ClaraPlugin`); tasks name it by import path, so
DAG files never import Airflow's core for it.
"""

from __future__ import annotations

from typing import Any

from clara_airflow.airflow_compat import PriorityWeightStrategy

LEVELS = ("lower", "normal", "higher", "immediate")  # least to most urgent
BAND = 10_000  # weights of one level: [level * BAND + 1, (level + 1) * BAND - 1]; Airflow keeps 32-bit ints
WEIGHTS = {level: index * BAND for index, level in enumerate(LEVELS)}  # each band's base


def run_priority(run_id: str) -> str:
    """``immediate`` of ``dicom-immediate__ct__1.2.3``; ``normal`` for every other run id."""
    head = run_id.split("__", 1)[0]
    level = head.removeprefix("dicom-") if head.startswith("dicom-") else "normal"
    return level if level in WEIGHTS else "normal"


def weight(level: str, downstream: int) -> int:
    """The band's base plus ``1 + downstream``, at most ``BAND - 1`` above the base."""
    return WEIGHTS[level] + min(1 + max(downstream, 0), BAND - 1)


class RunPriority(PriorityWeightStrategy):  # type: ignore[misc]
    """Strict priority bands per run (lower < normal < higher < immediate); within a band, tasks with
    more tasks after them first."""

    def get_weight(self, ti: Any) -> int:
        task = ti.task
        downstream = len(task.get_flat_relative_ids(upstream=False)) if task is not None else 0
        return weight(run_priority(str(ti.run_id or "")), downstream)
