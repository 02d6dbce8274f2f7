"""Import once, in a long-lived parent process, what every task of a Clara DAG would import again.

An Airflow task runs in a process forked from its worker: the LocalExecutor's workers are forked from
the scheduler, a Celery worker's pool processes from the worker, and each task process from one of
those. The task process parses its DAG file, and for a Clara DAG that parse imports clara_airflow, the
provider's operator and the Docker (or Kubernetes) SDK: measured on the cluster, about four fifths of a
short container task's CPU (docs/performance.md). Imported once in the parent before it forks, those
modules are shared copy-on-write, and no task imports them again.

Enable it in ``$AIRFLOW_HOME/config/airflow_local_settings.py``, which Airflow imports in each of its
processes at start (the scheduler, Celery workers, the DAG processor):

    from clara_airflow.preload import install

    install()

:func:`install` only registers an audit hook; the imports happen in the parent at its first ``os.fork``,
once Airflow is initialised (importing them while ``airflow_local_settings`` itself is being imported
would be circular), and never in a process that does not fork. The ``os.fork`` audit event comes before
the fork's own handlers run: an import from an ``os.register_at_fork(before=...)`` hook would let a module
imported there (``logging`` registers one) release at the fork a lock it never took. A module that fails
to import is logged and skipped: the task then imports it itself, as without preloading.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import time

__all__ = ["MODULES", "install", "preload"]

log = logging.getLogger(__name__)

# What parsing a Clara DAG file and running its tasks imports (the loader, the DAG builder, the operators),
# by the provider each needs; a backend whose provider is not installed is skipped.
MODULES: dict[str, tuple[str, ...]] = {
    # Airflow's own supervisor and task runner: a Celery worker's pool process imports them at its first task.
    "airflow.sdk": ("airflow.sdk", "airflow.sdk.execution_time.supervisor", "airflow.sdk.execution_time.task_runner",
                    "airflow.executors.base_executor", "airflow.sdk.definitions.decorators", "clara_airflow.loader",
                    "clara_airflow.dag", "clara_airflow.operators.steps", "clara_airflow.operators.batch",
                    "clara_airflow.operators.ensure_service", "clara_airflow.operators.release_leases",
                    "clara_airflow.services.reaper", "clara_airflow.dicom.config",
                    # Airflow 3.1's parse loads the plugins (the priority rule): ours, cheap since its app is lazy
                    "clara_airflow.plugin", "clara_airflow.priority"),
    "airflow.providers.docker": ("airflow.providers.docker.operators.docker", "clara_airflow.backends.docker",
                                 "clara_airflow.operators.docker_step"),
    "airflow.providers.cncf.kubernetes": ("airflow.providers.cncf.kubernetes.operators.pod",
                                          "clara_airflow.backends.kubernetes",
                                          "clara_airflow.operators.kubernetes_step"),
}
_state = {"installed": False, "done": False}


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


def preload() -> list[str]:
    """Import :data:`MODULES` (once per process); returns what was imported."""
    if _state["done"]:
        return []
    _state["done"] = True
    began, loaded = time.perf_counter(), []
    for provider, modules in MODULES.items():
        if not _installed(provider):
            continue
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # never break the scheduler or a worker for a speed-up
                log.warning("clara-airflow preload: %s not imported (%s); tasks import it themselves", name, exc)
                continue
            loaded.append(name)
    try:  # the loader's installation check reads package metadata: its path caches are inherited too
        from clara_airflow.versions import crypto_problem

        crypto_problem()
    except Exception as exc:
        log.warning("clara-airflow preload: package metadata not read (%s)", exc)
    log.info("clara-airflow preload: %d modules in %.2f s (pid %d)", len(loaded), time.perf_counter() - began,
             os.getpid())
    return loaded


def _on_audit(event: str, _args: object) -> None:
    if event == "os.fork" and not _state["done"]:
        try:
            preload()
        except Exception:  # an exception here would refuse the fork itself
            log.exception("clara-airflow preload failed; tasks import what they need themselves")


def install() -> None:
    """Preload in this process just before its first fork (see the module's docs)."""
    if not _state["installed"]:
        _state["installed"] = True
        sys.addaudithook(_on_audit)
