"""Paths and small builders shared by the test modules."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "pipelines"
# The shared examples when the checkout sits beside shared/, else the copy kept in the repo.
EXAMPLES = _SHARED if _SHARED.is_dir() else REPO / "tests" / "fixtures" / "shared-pipelines"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def expected_errors() -> dict[str, tuple[str, int, list[str]]]:
    """Rows of invalid/EXPECTED.md: file -> (rule, line, words the message contains)."""
    rows = {}
    for line in (EXAMPLES / "invalid" / "EXPECTED.md").read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+\.yaml)`\s*\|\s*(V\d+)[^|]*\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            words = re.findall(r"`([^`]+)`", match.group(4))
            rows[match.group(1)] = (match.group(2), int(match.group(3)), words)
    return rows


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
api-version: 0.4.0
name: base
operators:
- name: a
  container:
    image: example/a
    tag: "1.0"
  input:
  - path: /input
  output:
  - path: /output
"""


def busybox_service(sid: str, script: str, port: int, name: str = "svc") -> object:
    """A ServicePlan running ``script`` in the test busybox image with one http connection on ``port``."""
    from clara_airflow.compiler.plan import Requests, ServicePlan

    return ServicePlan(id=sid, image="clara-airflow/busybox", tag="1", command=("/bin/sh", "-c", script),
                       names=(name,), http=((f"{name.upper()}_URI", port),), volumes=(), variables=(),
                       requests=Requests(1, 64, 0), consumers=("x",))


def make_options(values: dict[str, object] | None = None) -> Any:
    """Typed Options from one flat mapping, as tests write them: ``[clara]`` deployment option names
    (already typed: ``{"network": "net"}``) and the parser's pipeline keys (``services.data_dir``)."""
    from clara_airflow.settings import DEPLOYMENT_OPTIONS, Deployment, Options
    from clara_airflow.spec.defaults import pipeline_settings

    values = dict(values or {})
    deployment = {k: values.pop(k) for k in list(values) if k in DEPLOYMENT_OPTIONS}
    return Options(pipeline_settings(values), Deployment(**deployment))  # type: ignore[arg-type]


def wait(check: Any, seconds: float, message: str) -> Any:
    """``check()``'s first truthy answer, looking every 0.5 s; AssertionError(message) after ``seconds``."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(message)
