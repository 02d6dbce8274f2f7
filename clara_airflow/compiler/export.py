"""Clara's ``register-results`` operator as a built-in DICOM export (no container).

An operator whose image is ``clara/register-results`` (any registry, any tag) with ``--agent ClaraSCU``
sends every DICOM file of its inputs to each destination its ``--data`` argument names (a JSON list,
``["MYPACS"]``), as NVIDIA's reference pipelines write it. The destinations must be configured
(``[clara] dicom_config``, the receiver's ``dicom.yaml``): an unknown name is an error when the DAG
is built, positioned at the operator's command (a typo). Without any configuration the pipeline still
loads, with a warning, and the export task fails at run time with the reason. Other agents
(``renderserver``: Clara's Render Server) load too, with a warning: their task is skipped at run time.
A migration tool does not refuse a pipeline for its last, optional step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from clara_airflow.errors import Problem
from clara_airflow.spec.model import OperatorSpec, PipelineSpec

__all__ = ["EXPORT_AGENT", "Export", "export_destinations", "is_register_results"]

EXPORT_AGENT = "ClaraSCU"
_IMAGE = "clara/register-results"


def is_register_results(image: str) -> bool:
    return image == _IMAGE or image.endswith("/" + _IMAGE)


def _argument(command: tuple[str, ...], flag: str) -> str | None:
    for n, word in enumerate(command):
        if word == flag and n + 1 < len(command):
            return command[n + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class Export:
    """What a register-results operator becomes: destinations to send to, or a reason to skip it; with
    the problems (the file is refused) and warnings (it loads) found, positioned at its command."""

    destinations: tuple[str, ...] = ()
    skip: str = ""
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


def export_destinations(spec: PipelineSpec, op: OperatorSpec, configured: Iterable[str] | None) -> Export:
    """What the register-results operator ``op`` becomes (see the module's rules)."""
    line, col = op.container.where.get("command")
    what = f"operator '{op.name}' ({op.container.image})"

    def problem(text: str) -> Export:
        return Export(problems=(Problem(spec.path, line, col, f"{what}: {text}", "X1"),))

    def warning(text: str) -> Problem:
        return Problem(spec.path, line, col, f"warning: {what}: {text}")

    agent = _argument(op.container.command, "--agent")
    if agent != EXPORT_AGENT:
        reason = (f"register-results agent {agent or '(none)'!r} is not supported by clara-airflow (only "
                  f"`--agent {EXPORT_AGENT}`, the DICOM export, is built in)")
        return Export(skip=reason, warnings=(warning(f"{reason}; its task is skipped at run time. Remove the "
                                                     "operator, or send DICOM with `--agent ClaraSCU --data "
                                                     "[\"<destination>\"]`"),))
    raw = _argument(op.container.command, "--data")
    try:
        names = json.loads(raw) if raw is not None else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return problem(f"--data must be a JSON list of destination names, like [\"MYPACS\"], not {raw!r}")
    if configured is None:
        return Export(destinations=tuple(names), warnings=(warning(
            "no DICOM destinations are configured, so the export task fails at run time (the steps before it "
            "run and keep their outputs); set [clara] dicom_config to the receiver's dicom.yaml (its "
            "destinations: section)"),))
    known = set(configured)
    unknown = [n for n in names if n not in known]
    if unknown:
        return problem(f"destination(s) {', '.join(unknown)} not configured; add them to destinations: in "
                       f"[clara] dicom_config (configured: {', '.join(sorted(known)) or 'none'})")
    return Export(destinations=tuple(names))
