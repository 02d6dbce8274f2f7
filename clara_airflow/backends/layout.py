"""The payload and output layout of section 12, shared by the Docker and Kubernetes backends."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from clara_airflow.compiler.plan import MountPlan
from clara_airflow.errors import ClaraAirflowError

RUN_MARKER = ".clara-run-id"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_folder_name(run_id: str) -> str:
    """The Airflow run id with every character outside ``A-Za-z0-9._-`` replaced by ``_``."""
    name = _UNSAFE.sub("_", run_id)
    return "_" + name if name in (".", "..") else name


def run_folder(output_root: str, dag_id: str, run_id: str) -> Path:
    return Path(output_root) / dag_id / run_folder_name(run_id)


def claim_run_folder(output_root: str, dag_id: str, run_id: str) -> Path:
    """Create ``<output_root>/<dag_id>/<run>/`` owned by ``run_id``; refuse a folder of another run."""
    folder = run_folder(output_root, dag_id, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    try:
        with open(marker, "x", encoding="utf-8") as out:
            out.write(run_id)
    except FileExistsError:
        owner = marker.read_text(encoding="utf-8")
        if owner != run_id:
            raise ClaraAirflowError(
                f"output folder {folder} belongs to run '{owner}', not '{run_id}'; refusing to write into "
                "it so no earlier run's outputs are overwritten (use a run id that differs in A-Za-z0-9._-)"
            ) from None
    return folder


def reset_step_folder(run_dir: Path, step: str, subs: list[str]) -> Path:
    """Empty this step's own folder of this run (a retry starts clean) and create its output folders."""
    own = run_dir / step
    if own.exists():
        shutil.rmtree(own)
    for sub in subs or [""]:
        (own / sub).mkdir(parents=True, exist_ok=True)
    return own


def step_user(raw: object, *, local: bool = True) -> tuple[int, int] | None:
    """``[clara] step_user``: the ``(uid, gid)`` step containers run as, or None for the image's user.

    ``UID:GID`` or ``UID`` (then GID = UID); ``worker`` (Docker only) is the worker process's own user,
    so outputs on the host belong to the account that runs Airflow.
    """
    text = str(raw).strip() if raw is not None else ""
    if not text:
        return None
    if text == "worker" and local:
        return os.getuid(), os.getgid()
    parts = text.split(":")
    if len(parts) in (1, 2) and all(p.isdigit() for p in parts):
        uid = int(parts[0])
        return uid, int(parts[-1])
    choices = "UID, UID:GID or 'worker'" if local else "UID or UID:GID (numeric; 'worker' is Docker only)"
    raise ClaraAirflowError(f"[clara] step_user {text!r} must be {choices}")


def hand_over(folder: Path, user: tuple[int, int] | None) -> None:
    """Give a step's fresh output folder to the user its container runs as (needs root, or that user)."""
    if user is None or (os.geteuid() != 0 and user[0] == os.geteuid()):
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, *user)


def check_payload(payload: object, payload_root: str | None, *, local: bool = True) -> str:
    """The run's ``clara_payload``: an absolute folder, inside ``payload_root`` when set; ``local``
    also requires it to exist here (Docker), where Kubernetes can only check the text."""
    if not isinstance(payload, str) or not payload.startswith("/"):
        raise ClaraAirflowError(f"clara_payload must be the absolute path of the input payload folder, "
                                f"not {payload!r}; set it in the trigger form or in x-airflow.payload.input")
    if ".." in payload.split("/"):
        raise ClaraAirflowError(f"clara_payload {payload!r} must not contain '..'")
    real = os.path.realpath(payload) if local else payload.rstrip("/") or "/"
    root = (os.path.realpath(payload_root) if local else payload_root.rstrip("/")) if payload_root else None
    if root and os.path.commonpath([real, root]) != root:
        raise ClaraAirflowError(f"clara_payload {payload!r} is outside the allowed payload root {payload_root!r} "
                                "([clara] payload_root)")
    if local and not os.path.isdir(real):
        raise ClaraAirflowError(f"clara_payload folder {payload!r} does not exist or is not a folder")
    return real


def host_source(mount: MountPlan, run_dir: Path, payload: str) -> str:
    """The host folder behind a payload, upstream or output mount."""
    if mount.kind == "payload":
        return payload
    if mount.kind in ("upstream", "output"):
        path = run_dir / mount.operator / mount.sub if mount.sub else run_dir / mount.operator
        if mount.kind == "upstream" and not path.is_dir():
            raise ClaraAirflowError(f"the output folder {path} of upstream operator '{mount.operator}' is "
                                    "missing; re-run that task first")
        return str(path)
    return mount.source
