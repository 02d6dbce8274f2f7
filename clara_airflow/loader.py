"""load_dags(globals(), __file__): every Clara pipeline YAML beside the loader becomes one DAG.

A broken file never hides the others: it becomes a paused placeholder DAG tagged ``clara-compile-error``
whose description and docs carry every ``file:line:col`` error, and whose only task fails with them.
With ``[clara] strict = True`` (CI) one error listing every broken file is raised instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from clara_airflow.backends.registry import deployment_options
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.compiler.plan import PipelinePlan
from clara_airflow.errors import ClaraAirflowError, SpecError
from clara_airflow.services.reaper import build_reaper_dag
from clara_airflow.settings import Deployment
from clara_airflow.spec.crosscheck import duplicate_pipeline
from clara_airflow.spec.defaults import load_defaults_file
from clara_airflow.spec.load import load_pipeline
from clara_airflow.spec.model import ERROR_DAG_PREFIX, MAX_DAG_ID, REAPER_DAG_ID
from clara_airflow.spec.source import pipeline_files, read_pipeline_bytes
from clara_airflow.versions import crypto_problem

__all__ = ["load_dags", "pipeline_files"]

log = logging.getLogger(__name__)
ERROR_TAG = "clara-compile-error"
_NAME_LINE = re.compile(r"^name:[ \t]*['\"]?([A-Za-z0-9_-]+)['\"]?[ \t]*(?:#.*)?$", re.MULTILINE)
_CACHE: dict[tuple[str, bytes, str, tuple[str, ...] | None, int | None], PipelinePlan] = {}


def load_dags(namespace: dict[str, Any], anchor: str | Path, *, strict: bool | None = None,
              reaper: bool | None = None) -> dict[str, Any]:
    """Build one DAG per pipeline file and register each in ``namespace`` (a DAG file's ``globals()``).

    :param anchor: the loader file (``__file__``) or a folder; pipelines are searched below its folder.
    :param strict: raise one error listing every broken file instead of placeholder DAGs;
        default ``[clara] strict``.
    :param reaper: define the ``clara_service_reaper`` DAG here; default: only in the first loader file
        (by path) of the dags folder, so a deployment with several loader files defines it once.
    """
    from airflow.sdk import get_parsing_context

    _warn_once()
    folder = Path(anchor) if Path(anchor).is_dir() else Path(anchor).parent
    settings, options = deployment_options()
    strict = options.strict if strict is None else strict
    files = pipeline_files(folder)
    wanted = get_parsing_context().dag_id
    if wanted:
        files = [p for p in files if _declared_name(p) == wanted] or files
    try:
        deployment = {**settings, **load_defaults_file(folder)}
        defaults_error = None
    except SpecError as exc:
        deployment, defaults_error = settings, exc
    dags, errors = _build_all(files, deployment, options, defaults_error, _destinations(options),
                              len(options.gpus) if options.gpus and options.gpus != ("auto",) else None)
    if errors and strict:
        raise ClaraAirflowError("broken Clara pipelines:\n" + "\n".join(text for _, text in errors))
    for path, text in errors:
        try:
            dag = error_dag(path, text, folder, taken=set(dags))
        except Exception:  # never let the placeholder hide the good DAGs
            log.exception("clara-airflow: cannot build the error DAG of %s", path)
            continue
        dags[dag.dag_id] = dag
    if (not wanted or wanted == REAPER_DAG_ID) and (reaper if reaper is not None else defines_reaper(anchor)):
        dags[REAPER_DAG_ID] = build_reaper_dag(options)
    namespace.update(dags)
    return dags


_WARNED: list[str] = []


def _warn_once() -> None:
    """Problems of the installation itself, logged once per process (every parse would repeat them)."""
    if _WARNED:
        return
    _WARNED.append("checked")
    problem = crypto_problem()
    if problem:
        log.warning("clara-airflow: %s", problem)


def _destinations(options: Deployment) -> tuple[str, ...] | None:
    """The DICOM destinations register-results may send to; a broken dicom.yaml is logged, and only the
    pipelines that export are then refused (with a pointer to the setting)."""
    from clara_airflow.dicom.config import configured_destinations

    try:
        return configured_destinations(options.dicom_config)
    except (SpecError, OSError) as exc:
        log.error("clara-airflow: [clara] dicom_config %s cannot be used:\n%s", options.dicom_config, exc)
        return None


def _build_all(files: list[Path], deployment: dict[str, Any], options: Deployment,
               defaults_error: SpecError | None, destinations: tuple[str, ...] | None = None,
               gpus: int | None = None) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    from clara_airflow.dag import build_dag

    dags: dict[str, Any] = {}
    owners: dict[str, Path] = {}
    errors: list[tuple[Path, str]] = []
    for path in files:
        began = time.perf_counter()
        try:
            if defaults_error is not None:
                raise defaults_error
            plan = _compile(path, deployment, destinations, gpus)
            other = owners.setdefault(plan.dag_id.lower(), path)
            if other != path:
                raise ClaraAirflowError(duplicate_pipeline(str(path), plan.dag_id, plan.name_at, other))
            dags[plan.dag_id] = build_dag(plan, options)
            log.info("clara-airflow: %s -> DAG %s in %.1f ms", path.name, plan.dag_id,
                     (time.perf_counter() - began) * 1000)
        except (ClaraAirflowError, OSError) as exc:
            log.error("clara-airflow: %s is not loaded:\n%s", path, exc)
            errors.append((path, str(exc)))
        except Exception as exc:  # an unexpected failure must still not hide the other pipelines
            log.exception("clara-airflow: internal error while loading %s", path)
            errors.append((path, f"{path}:1:1: internal error in clara-airflow ({type(exc).__name__}: {exc}); "
                                 "please report it with this file"))
    return dags, errors


def _compile(path: Path, deployment: dict[str, Any], destinations: tuple[str, ...] | None = None,
             gpus: int | None = None) -> PipelinePlan:
    """Compiled plans are cached per process by file content and settings."""
    data = read_pipeline_bytes(path)
    key = (str(path), hashlib.sha256(data).digest(), repr(sorted(deployment.items())), destinations, gpus)
    if key not in _CACHE:
        _CACHE[key] = plan = compile_pipeline(load_pipeline(path, data), deployment, destinations=destinations,
                                              gpus=gpus)
        for warning in plan.warnings:
            log.warning("%s", warning)
    return _CACHE[key]


def _declared_name(path: Path) -> str | None:
    """The ``name:`` line's value, read without parsing (only regular files, bounded)."""
    try:
        text = read_pipeline_bytes(path).decode("utf-8", errors="replace")
    except SpecError:
        return None
    match = _NAME_LINE.search(text)
    return match.group(1) if match else None


def loader_files(dags_folder: Path) -> list[Path]:
    """The ``.py`` files of the dags folder that call ``load_dags`` (hidden folders skipped), by path."""
    found = []
    for here, dirs, names in os.walk(dags_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in names:
            path = Path(here) / name
            if name.endswith(".py") and not name.startswith("."):
                try:
                    with open(path, "rb") as handle:
                        if b"load_dags(" in handle.read(65536):
                            found.append(path)
                except OSError:
                    continue
    return sorted(found)


def defines_reaper(anchor: str | Path) -> bool:
    """Only the first loader file of the dags folder defines the reaper DAG (a DAG id must be unique)."""
    from clara_airflow.airflow_compat import conf

    anchor = Path(anchor).resolve()
    folder = Path(conf.get("core", "dags_folder", fallback=str(anchor.parent))).resolve()
    loaders = loader_files(folder) if anchor.is_relative_to(folder) else []
    return not loaders or loaders[0].resolve() == anchor


def error_dag(path: Path, text: str, folder: Path, *, taken: set[str]) -> Any:
    """A paused placeholder DAG that shows a broken file's errors and fails with them when run."""
    from airflow.sdk import DAG

    from clara_airflow.operators.pipeline_error import PipelineErrorOperator

    name = _declared_name(path)
    relative = str(path.relative_to(folder))
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", relative)
    if len(slug) > 200:
        slug = f"{slug[:180]}_{hashlib.sha256(relative.encode()).hexdigest()[:12]}"
    usable = name and len(name) <= MAX_DAG_ID and name.lower() != REAPER_DAG_ID \
        and not name.lower().startswith(ERROR_DAG_PREFIX) and name not in taken and "duplicate pipeline name" not in text
    dag_id = name if usable and name else f"{ERROR_DAG_PREFIX}{slug}"
    text = text.replace(f"{folder}/", "")  # paths relative to the dags folder: no host paths in the UI
    first = text.splitlines()[0] if text else "unknown error"
    doc = (f"# Broken Clara pipeline `{relative}`\n\nThis file could not be loaded; no run can start until it "
           f"is fixed. Every problem, as `file:line:col: message`:\n\n```\n{text}\n```\n\n"
           f"Check it locally with `clara-airflow validate {relative}`.")
    with DAG(dag_id=dag_id, description=f"BROKEN: {first}"[:200], doc_md=doc, schedule=None,
             tags=["clara", ERROR_TAG], is_paused_upon_creation=True) as dag:
        PipelineErrorOperator(task_id="clara_compile_error", message=text)
    return dag
