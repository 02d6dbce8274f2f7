"""Service identity and id (section 7.4), shared by compile time and run time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

SERVICE_PREFIX = "clara-svc-"
VARIABLE_PREFIX = "clara_service_"


def service_id(image: str, tag: str, command: Sequence[str]) -> str:
    """First 12 hex digits of SHA-256 over the compact JSON ``[image, tag, [command...]]``."""
    text = json.dumps([image, tag, list(command)], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def service_name(sid: str) -> str:
    """The container / Kubernetes object name, which is also the start lock: ``clara-svc-<id>``."""
    return SERVICE_PREFIX + sid


def volume_name(sid: str, path: str) -> str:
    """Named volume of one (identity, path): ``clara-svc-<id>-<8 hex of SHA-256(path)>``."""
    return f"{SERVICE_PREFIX}{sid}-{hashlib.sha256(path.encode('utf-8')).hexdigest()[:8]}"


def variable_key(sid: str) -> str:
    """The Airflow Variable that records the instance: ``clara_service_<id>``."""
    return VARIABLE_PREFIX + sid
