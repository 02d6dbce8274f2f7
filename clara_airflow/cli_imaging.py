"""The imaging commands of ``clara-airflow``: ``studies`` (batch mode's ledger) and ``dicom`` (the receiver)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clara_airflow.errors import ClaraAirflowError, SpecError


def add_imaging_commands(sub: Any) -> None:
    std = sub.add_parser("studies", help="batch mode: each study of a pipeline and what was done with it")
    std.add_argument("pipeline", help="the pipeline's YAML file, or its name in the dags folder")
    std.add_argument("--json", action="store_true", help="machine-readable output")
    std.add_argument("--retry", metavar="STUDY", help="offer a failed or given-up study to the next run again")
    std.set_defaults(func=_studies)
    dcm = sub.add_parser("dicom", help="the DICOM receiver: studies from a PACS become DAG runs")
    dcm_sub = dcm.add_subparsers(dest="action", required=True)
    listen = dcm_sub.add_parser("listen", help="answer C-ECHO and C-STORE; start one run per complete study and pipeline")
    listen.add_argument("--config", required=True, type=Path, help="dicom.yaml (see docs/dicom.md)")
    listen.set_defaults(func=_dicom_listen)
    check = dcm_sub.add_parser("check", help="validate dicom.yaml and print every problem")
    check.add_argument("--config", required=True, type=Path)
    check.set_defaults(func=_dicom_check)
    state = dcm_sub.add_parser("status", help="what the receiver holds: groups, pending and failed runs, disk, DAGs")
    state.add_argument("--config", required=True, type=Path)
    state.add_argument("--json", action="store_true", help="machine-readable output")
    state.add_argument("--offline", action="store_true", help="do not ask Airflow whether the routed DAGs exist")
    state.set_defaults(func=_dicom_status)
    again = dcm_sub.add_parser("retry", help="send failed runs again (after fixing the cause: a DAG deployed, a typo)")
    again.add_argument("--config", required=True, type=Path)
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", help="the run id of one failed trigger (see dicom status)")
    which.add_argument("--all-failed", action="store_true", help="every failed trigger")
    again.set_defaults(func=_dicom_retry)


def _studies(args: argparse.Namespace) -> int:
    from clara_airflow.batch.run import study_states

    plan = _batch_plan(args.pipeline)
    ledger_args = (plan.settings.payload.output_root, plan.dag_id, plan.settings.retries)
    if args.retry:
        from clara_airflow.batch.run import ledger_for

        try:
            ledger_for(*ledger_args).offer_again(args.retry)
        except ValueError as exc:
            raise ClaraAirflowError(f"{plan.dag_id}: {exc}") from None
        print(f"study {args.retry} of {plan.dag_id} is offered to the next run again")
        return 0
    rows = study_states(plan.settings.batch, *ledger_args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'study':<40} {'state':<12} detail")
    for row in rows:
        print(f"{row['study']:<40} {row['state']:<12} {row['detail']}")
    print(f"{len(rows)} studies in {plan.settings.batch.inbox}", file=sys.stderr)
    return 0


def _batch_plan(pipeline: str) -> Any:
    """The compiled plan of a batch pipeline given by file or by name (in Airflow's dags folder)."""
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.defaults import deployment_settings
    from clara_airflow.spec.load import load_pipeline
    from clara_airflow.spec.source import pipeline_files

    path = Path(pipeline)
    if not path.is_file():
        from clara_airflow.airflow_compat import conf

        folder = Path(conf.get("core", "dags_folder"))
        found = [f for f in pipeline_files(folder) if _declares(f, pipeline)]
        if not found:
            raise ClaraAirflowError(f"no pipeline file or pipeline named {pipeline!r} in {folder}; give the YAML file")
        path = found[0]
    plan = compile_pipeline(load_pipeline(path), deployment_settings(path.parent))
    if plan.settings.batch.inbox is None:
        raise ClaraAirflowError(f"{path}: pipeline {plan.dag_id} has no batch mode (x-airflow batch.inbox)")
    return plan


def _declares(path: Path, name: str) -> bool:
    from clara_airflow.spec.load import load_pipeline

    try:
        return load_pipeline(path).name == name
    except (SpecError, OSError):
        return False


def _dicom_check(args: argparse.Namespace) -> int:
    from clara_airflow.dicom.config import load_config

    config = load_config(args.config)
    print(f"{args.config}: valid; {len(config.ae_titles)} routed AE title(s), {len(config.destinations)} "
          "destination(s)")
    return 0


def _dicom_status(args: argparse.Namespace) -> int:
    from clara_airflow.dicom.config import load_config
    from clara_airflow.dicom.status import render, status

    found = status(load_config(args.config), airflow=not args.offline)
    print(json.dumps(found, indent=2) if args.json else render(found))
    return 0


def _dicom_retry(args: argparse.Namespace) -> int:
    from clara_airflow.dicom.config import load_config
    from clara_airflow.dicom.status import retry_failed

    moved = retry_failed(load_config(args.config), None if args.all_failed else args.run_id)
    for run_id in moved:
        print(f"{run_id}: pending again")
    if not moved:
        print("no failed trigger " + ("" if args.all_failed else f"with run id {args.run_id} ") + "(see dicom status)",
              file=sys.stderr)
        return 1
    return 0


def _dicom_listen(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from clara_airflow.dicom.config import load_config
    from clara_airflow.dicom.listen import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    config = load_config(args.config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(config, stop=stop)
    return 0
