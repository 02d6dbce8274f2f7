"""The clara-airflow command: validate and inspect pipelines, list, stop and collect services."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clara_airflow.cli_imaging import add_imaging_commands
from clara_airflow.compiler.identity import service_name
from clara_airflow.errors import ClaraAirflowError, SpecError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `clara-airflow inspect ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not raise again
        return 0
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ClaraAirflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clara-airflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="check pipeline files; print every error as PATH:LINE:COL")
    val.add_argument("paths", nargs="+", type=Path)
    val.add_argument("--warnings", action="store_true", help="also print warnings")
    val.set_defaults(func=_validate)
    ins = sub.add_parser("inspect", help="print the compiled plan of one pipeline")
    ins.add_argument("path", type=Path)
    ins.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(func=_inspect)
    svc = sub.add_parser("services", help="shared services recorded in Airflow Variables")
    svc_sub = svc.add_subparsers(dest="action", required=True)
    lst = svc_sub.add_parser("list", help="list recorded services: state, address, last use, idle TTL, leases")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_services_list)
    stop = svc_sub.add_parser("stop", help="stop a service and clear its record")
    stop.add_argument("service", help="service id, container name or service name")
    stop.add_argument("--force", action="store_true", help="stop even while runs hold leases")
    stop.add_argument("--volumes", action="store_true",
                      help="also remove the service's named volumes / claims (its data is lost)")
    stop.set_defaults(func=_services_stop)
    gc = svc_sub.add_parser("gc", help="stop idle services; report orphans")
    gc.add_argument("--dry-run", action="store_true")
    gc.set_defaults(func=_services_gc)
    clean = sub.add_parser("cleanup", help="apply x-airflow.retention: delete old run outputs and processed studies")
    clean.add_argument("--dry-run", action="store_true", help="only say what would be deleted and kept")
    clean.add_argument("--json", action="store_true", help='{"delete": [...], "keep": [...], "bytes": N}')
    clean.set_defaults(func=_cleanup)
    gpus = sub.add_parser("gpus", help="this Docker host's GPUs ([clara] gpus) and which step or service holds each")
    gpus.add_argument("--json", action="store_true", help="machine-readable output")
    gpus.set_defaults(func=_gpus)
    add_imaging_commands(sub)
    return parser


def _expand(paths: Sequence[Path]) -> list[Path]:
    """Folders become their pipeline files (the loader's finder); a .yaml/.yml path is checked as it is."""
    from clara_airflow.spec.source import PIPELINE_SUFFIXES, pipeline_files

    files: list[Path] = []
    for path in paths:
        if path.is_dir() and not path.name.endswith(PIPELINE_SUFFIXES):
            files += pipeline_files(path)
        else:
            files.append(path)
    return files


def _validate(args: argparse.Namespace) -> int:
    import logging

    from clara_airflow.spec.crosscheck import duplicate_pipeline
    from clara_airflow.versions import crypto_problem

    logging.getLogger("clara_airflow.spec.load").setLevel(logging.ERROR)  # warnings: printed below, once
    problem = crypto_problem()
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    failed = hidden = 0
    names: dict[str, Path] = {}
    deployments: dict[Path, dict[str, Any]] = {}
    files = _expand(args.paths)
    for path in files:
        spec = _check_file(path, deployments)
        if spec is None:
            failed += 1
            continue
        if args.warnings:
            for warning in spec.warnings:
                print(warning)
        else:
            hidden += len(spec.warnings)
        other = names.setdefault(spec.name.lower(), path)
        if other != path:
            print(duplicate_pipeline(str(path), spec.name, spec.where.at("name"), other))
            failed += 1
    print(f"{len(files) - failed} valid, {failed} invalid", file=sys.stderr)
    if hidden:
        print(f"{hidden} warning(s) not shown; add --warnings to see them", file=sys.stderr)
    if not files:
        print("no pipeline files (*.yaml, *.yml) found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    return 1 if failed else 0


def _check_file(path: Path, deployments: dict[Path, dict[str, Any]]) -> Any:
    """The file's spec, compiled with its folder's settings; None after printing its errors."""
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.defaults import deployment_settings
    from clara_airflow.spec.load import load_pipeline

    try:
        spec = load_pipeline(path)
        if path.parent not in deployments:
            deployments[path.parent] = deployment_settings(path.parent)
        from clara_airflow.dicom.config import environment_destinations

        plan = compile_pipeline(spec, deployments[path.parent], destinations=environment_destinations())
    except SpecError as exc:
        print(exc)
        return None
    except OSError as exc:
        print(f"{path}:1:1: cannot read the file: {exc.strerror}")
        return None
    except ClaraAirflowError as exc:  # deployment settings ([clara] in the environment) or a compile error
        print(f"{path}:1:1: {exc}")
        return None
    import dataclasses

    return dataclasses.replace(spec, warnings=tuple(sorted(spec.warnings + plan.warnings)))  # the compiler's too


def _inspect(args: argparse.Namespace) -> int:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.compiler.resolve import resolve_plan
    from clara_airflow.spec.defaults import deployment_settings
    from clara_airflow.spec.load import load_pipeline

    values = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ClaraAirflowError(f"--param {item!r}: write it as NAME=VALUE")
        values[key] = value
    spec = load_pipeline(args.path)
    from clara_airflow.dicom.config import environment_destinations

    plan = resolve_plan(compile_pipeline(spec, deployment_settings(args.path.parent),
                                         destinations=environment_destinations()), values)
    data = _plan_json(plan)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(_plan_text(data))
    return 0


def _plan_json(plan: Any) -> dict[str, Any]:
    return {
        "dag_id": plan.dag_id,
        "source": plan.source,
        "parameters": dict(plan.parameters),
        "pull_secrets": list(plan.pull_secrets),
        "operators": [{
            "name": s.name, "image": s.image, "tag": s.tag, "command": list(s.command),
            "env": list(s.env_names), "env_values": _env_values(s, plan), "upstream": list(s.upstream),
            "requests": {"cpu": s.requests.cpu, "memory": s.requests.memory, "gpu": s.requests.gpu},
            "services": [u.service for u in s.services],
            "mounts": [{"path": m.target, "kind": m.kind, "read_only": m.read_only,
                        **({"operator": m.operator} if m.operator else {}),
                        **({"output": m.sub} if m.sub else {}), **({"volume": m.volume} if m.volume else {})}
                       for m in s.mounts],
        } for s in plan.steps],
        "services": [{
            "id": v.id, "identity": {"image": v.image, "tag": v.tag, "command": list(v.command)},
            "names": list(v.names), "connections": v.connections, "consumers": list(v.consumers),
            "requests": {"cpu": v.requests.cpu, "memory": v.requests.memory, "gpu": v.requests.gpu},
            **({"models": list(v.models)} if v.models else {}),
        } for v in plan.services],
    }


def _env_values(step: Any, plan: Any) -> dict[str, str]:
    """The environment a step gets: its variables, and connection values as the ensure task gives them."""
    from clara_airflow.backends.base import connection_values

    values = dict(step.variables)
    for use in step.services:
        connections = connection_values(plan.service(use.service), service_name(use.service))
        values.update({env: connections[name] for env, name in use.env})
    return values


def _plan_text(data: dict[str, Any]) -> str:
    lines = [f"pipeline {data['dag_id']}  ({data['source']})"]
    for op in data["operators"]:
        req = op["requests"]
        lines.append(f"  operator {op['name']}: {op['image']}:{op['tag']}  cpu={req['cpu']} "
                     f"memory={req['memory']}MiB gpu={req['gpu']}")
        if op["upstream"]:
            lines.append(f"    after: {', '.join(op['upstream'])}")
        if op["command"]:
            lines.append(f"    command: {json.dumps(op['command'])}")
        if op["env"]:
            lines.append(f"    env: {', '.join(op['env'])}")
    for svc in data["services"]:
        ident = svc["identity"]
        lines.append(f"  service {service_name(svc['id'])} ({', '.join(svc['names'])}): "
                     f"{ident['image']}:{ident['tag']} {json.dumps(ident['command'])}")
        conns = ", ".join(f"{k}={v}" for k, v in svc["connections"].items())
        lines.append(f"    connections: {conns or 'none'}; used by {', '.join(svc['consumers'])}")
    return "\n".join(lines)


LIST_COLUMNS = ("ID", "STATE", "IMAGE", "BACKEND", "ADDRESS", "STARTED", "LAST USED", "IDLE TTL", "LEASES", "NAMES")


def _services_list(args: argparse.Namespace) -> int:
    from clara_airflow.services.admin import service_rows

    rows = service_rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no services recorded")
        return 0
    table = [LIST_COLUMNS] + [(
        row["id"], row["state"], f"{row['image']}:{row['tag']}", row.get("backend", "?"), row.get("host") or "-",
        row.get("started_at") or "-", row.get("last_used") or "-",
        f"{row['idle_ttl']} s" if row.get("idle_ttl") is not None else "-",
        str(len(row["leases"])), ",".join(row.get("names", [])) or "-") for row in rows]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(LIST_COLUMNS))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _services_stop(args: argparse.Namespace) -> int:
    from clara_airflow.services.admin import stop_service

    print(stop_service(args.service, force=args.force, volumes=args.volumes))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from clara_airflow.services.cleanup import cleanup

    plan, problems = cleanup(dry_run=args.dry_run)
    found = plan.as_dict()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for item in plan.delete:
            print(f"{verb} {item.kind:<8} {item.path} ({item.bytes} bytes): {item.reason}")
        for item in plan.keep:
            print(f"keep    {item.kind:<8} {item.path}: {item.reason}")
        print(f"{len(plan.delete)} {verb}, {found['bytes']} bytes; {len(plan.keep)} kept", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _gpus(args: argparse.Namespace) -> int:
    from clara_airflow.backends.docker_gpus import gpu_lines, gpu_rows
    from clara_airflow.backends.registry import deployment_options

    deployment = deployment_options()[1]
    print(json.dumps(gpu_rows(deployment), indent=2) if args.json else "\n".join(gpu_lines(deployment)))
    return 0


def _services_gc(args: argparse.Namespace) -> int:
    from clara_airflow.services.admin import collect_services

    sys.stdout.writelines(f"{line}\n" for line in collect_services(dry_run=args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
