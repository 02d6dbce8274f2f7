"""Run priority for Airflow's scheduler: a priority weight strategy that reads the run's priority from its
run id (``dicom-<priority>__...``, as the DICOM receiver names its runs).

Airflow computes a task instance's ``priority_weight`` once, when the run's task instances are created,
from the task's ``weight_rule``; the scheduler then hands queued task instances to free slots highest
weight first. The run's conf is not reachable at that moment (the run is not yet committed), so the
receiver puts the priority into the run id, which is, and into the conf, for people to read.

Registered by the plugin (:class:`clara_airflow.plugin.ClaraPlugin`); tasks name it by import path, so
DAG files never import Airflow's core for it.
"""

from __future__ import annotations

from typing import Any

from airflow.task.priority_strategy import PriorityWeightStrategy

WEIGHTS = {"lower": 1, "normal": 10, "higher": 100, "immediate": 1000}


def run_priority(run_id: str) -> str:
    """``immediate`` of ``dicom-immediate__ct__1.2.3``; ``normal`` for every other run id."""
    head = run_id.split("__", 1)[0]
    level = head.removeprefix("dicom-") if head.startswith("dicom-") else "normal"
    return level if level in WEIGHTS else "normal"


class RunPriority(PriorityWeightStrategy):
    """weight = the run's priority factor x (1 + the task's downstream tasks), so a more urgent run's
    tasks always come first, and within a run, tasks with more work after them (Airflow's default)."""

    def get_weight(self, ti: Any) -> int:
        task = ti.task
        downstream = len(task.get_flat_relative_ids(upstream=False)) if task is not None else 0
        return WEIGHTS[run_priority(str(ti.run_id or ""))] * (1 + downstream)
