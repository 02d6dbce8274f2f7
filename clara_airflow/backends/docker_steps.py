"""Pure builders of Docker step containers: what runs, decided as data (no engine, no Airflow)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clara_airflow.backends.base import LABEL_DEPLOYMENT, LABEL_ID, ContainerMount, ContainerRun
from clara_airflow.backends.layout import host_source
from clara_airflow.compiler.plan import StepPlan
from clara_airflow.spec.template import expand_references

LABEL_STEP = "clara-airflow/step"  # on step containers: the operator; with LABEL_DAG and LABEL_RUN_ID
LABEL_DAG = "clara-airflow/dag-id"
LABEL_RUN_ID = "clara-airflow/run-id"
LABEL_STUDY = "clara-airflow/study"  # batch mode: the study a step container works on

__all__ = ["LABEL_DAG", "LABEL_ID", "LABEL_RUN_ID", "LABEL_STEP", "LABEL_STUDY", "docker_run"]


def docker_run(step: StepPlan, env: dict[str, str], payload: str, run_dir: Path, *, dag_id: str, run_id: str,
               try_number: int, user: tuple[int, int] | None, study: str = "", deployment: str | None = None
               ) -> ContainerRun:
    """The container of one step try: pure, so every decision is testable without an engine.

    :param step: the step with the run's parameters substituted. :param env: its full environment.
    :param run_dir: the run's folder, or in batch mode the study's folder in it. :param study: batch mode's study.
    """
    mounts = tuple(ContainerMount(m.target, m.volume, "volume", m.read_only) if m.kind == "volume" else
                   ContainerMount(m.target, host_source(m, run_dir, payload), "bind", m.read_only) for m in step.mounts)
    # The deployment is part of the name: two Airflow deployments on one engine (staging beside production, or a
    # metadata database made anew) run the same DAG ids and scheduled run ids, and must not fight for a name.
    named = f"{run_id}/{study}" if study else run_id
    digest = hashlib.sha256((f"{deployment}\0{named}" if deployment else named).encode()).hexdigest()[:10]
    labels = {LABEL_DAG: dag_id, LABEL_STEP: step.name, LABEL_RUN_ID: run_id, "clara-airflow/run": run_dir.name}
    if study:
        labels = {**labels, LABEL_STUDY: study, "clara-airflow/run": run_dir.parent.name}
    if deployment:
        labels[LABEL_DEPLOYMENT] = deployment
    return ContainerRun(
        image=f"{step.image}:{step.tag}", command=tuple(expand_references(c, env) for c in step.command),
        env=dict(env), mounts=mounts,
        labels=labels,
        name=f"clara-{dag_id[:80]}-{step.name[:80]}-{digest}-{try_number}",
        user=f"{user[0]}:{user[1]}" if user else None)

