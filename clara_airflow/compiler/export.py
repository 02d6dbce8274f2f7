"""Clara's ``register-results`` operator as a built-in DICOM export (no container).

An operator whose image is ``clara/register-results`` (any registry, any tag) with ``--agent ClaraSCU``
sends every DICOM file of its inputs to each destination its ``--data`` argument names (a JSON list,
``["MYPACS"]``), as NVIDIA's reference pipelines write it. The destinations must be configured
(``[clara] dicom_config``, the receiver's ``dicom.yaml``): an unknown name is an error when the DAG
is built, positioned at the operator's command. Other agents are not supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from clara_airflow.errors import Problem
from clara_airflow.spec.model import OperatorSpec, PipelineSpec

__all__ = ["EXPORT_AGENT", "export_destinations", "is_register_results"]

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


def export_destinations(spec: PipelineSpec, op: OperatorSpec, configured: Iterable[str] | None
                        ) -> tuple[tuple[str, ...], list[Problem]]:
    """(destination names, problems) of a register-results operator; problems are positioned at its command."""
    line, col = op.container.where.get("command")
    what = f"operator '{op.name}' ({op.container.image})"

    def problem(text: str) -> tuple[tuple[str, ...], list[Problem]]:
        return (), [Problem(spec.path, line, col, f"{what}: {text}", "X1")]

    agent = _argument(op.container.command, "--agent")
    if agent != EXPORT_AGENT:
        return problem(f"register-results agent {agent or '(none)'!r} is not supported; clara-airflow runs "
                       f"`--agent {EXPORT_AGENT} --data [\"<destination>\"]` (DICOM export) as a built-in task")
    raw = _argument(op.container.command, "--data")
    try:
        names = json.loads(raw) if raw is not None else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return problem(f"--data must be a JSON list of destination names, like [\"MYPACS\"], not {raw!r}")
    if configured is None:
        return problem("no DICOM destinations are configured: set [clara] dicom_config to the receiver's dicom.yaml "
                       "(its destinations: section)")
    known = set(configured)
    unknown = [n for n in names if n not in known]
    if unknown:
        return problem(f"destination(s) {', '.join(unknown)} not configured; add them to destinations: in "
                       f"[clara] dicom_config (configured: {', '.join(sorted(known)) or 'none'})")
    return tuple(names), []
