"""The payload and output layout of section 12, shared by the Docker and Kubernetes backends."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from clara_airflow.compiler.plan import MountPlan
from clara_airflow.durable import create_file
from clara_airflow.errors import ClaraAirflowError

RUN_MARKER = ".clara-run-id"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_folder_name(run_id: str) -> str:
    """The Airflow run id with every character outside ``A-Za-z0-9._-`` replaced by ``_``; a leading ``.``
    gets a ``_`` before it (hidden names, like the batch ledger's ``.clara-studies``, are never run folders)."""
    name = _UNSAFE.sub("_", run_id)
    return "_" + name if name.startswith(".") else name


def run_folder(output_root: str, dag_id: str, run_id: str) -> Path:
    return Path(output_root) / dag_id / run_folder_name(run_id)


def claim_run_folder(output_root: str, dag_id: str, run_id: str) -> Path:
    """Create ``<output_root>/<dag_id>/<run>/`` owned by ``run_id``; refuse a folder of another run."""
    folder = run_folder(output_root, dag_id, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    # Written in full, then hard-linked (clara_airflow.durable.create_file): steps of one run starting
    # together never read a marker that is created but not yet written, and a link fails when it exists.
    try:
        created = create_file(marker, run_id)
    except OSError as exc:
        raise ClaraAirflowError(f"cannot create the run marker {marker}: {exc.strerror or exc}; the output root "
                                "must be a writable local or NFS folder with hard links") from None
    if not created:
        owner = marker.read_text(encoding="utf-8")
        if owner != run_id:
            raise ClaraAirflowError(
                f"output folder {folder} belongs to run '{owner}', not '{run_id}'; refusing to write into "
                "it so no earlier run's outputs are overwritten (use a run id that differs in A-Za-z0-9._-)"
            )
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


DEFAULT_PAYLOAD_ROOT = "/var/lib/clara-airflow/payloads"
# Host folders no payload may be, lie inside or contain, whatever ``payload_root`` says: the kernel's
# and the engine's interfaces, system configuration and root's home.
DENIED = ("/proc", "/sys", "/dev", "/run", "/var/run", "/etc", "/root", "/boot")
_MAX_PAYLOAD_ENTRIES = 500_000


def check_payload(payload: object, payload_root: str | None, *, local: bool = True,
                  reserved: tuple[str, ...] = ()) -> str:
    """The run's ``clara_payload``, checked: it comes from the run's conf, which a user who may only
    trigger DAGs controls, and it becomes a host folder mounted into a container.

    :param payload_root: the folder every payload must lie in (``[clara] payload_root``); None means
        :data:`DEFAULT_PAYLOAD_ROOT`.
    :param local: the folder is on this machine (Docker): symlinks are resolved, it must exist and hold
        no socket. Kubernetes can only check the text (it is a path on a claim or a node).
    :param reserved: folders of other runs and services (the output root, the service data folder);
        a payload may neither lie inside one nor contain one.
    :raises ClaraAirflowError: naming the value, the rule and the setting to change.
    """
    if not isinstance(payload, str) or not payload.startswith("/"):
        raise ClaraAirflowError(f"clara_payload must be the absolute path of the input payload folder, "
                                f"not {payload!r}; set it in the trigger form or in x-airflow.payload.input")
    if len(payload) > 4096 or any(ord(ch) < 32 or ch == "\x7f" for ch in payload):
        raise ClaraAirflowError(f"clara_payload {payload[:80]!r} is over 4096 characters or holds a control "
                                "character; give a plain folder path")
    if ".." in payload.split("/"):
        raise ClaraAirflowError(f"clara_payload {payload!r} must not contain '..'")
    resolve = os.path.realpath if local else _normalise
    real = resolve(payload)
    root = resolve(payload_root or DEFAULT_PAYLOAD_ROOT)
    if not _inside(real, root):
        raise ClaraAirflowError(
            f"clara_payload {payload!r} is outside the payload root {root!r}; put the study below it, or point "
            "[clara] payload_root (AIRFLOW__CLARA__PAYLOAD_ROOT) at the folder your payloads live in")
    for folder, why in [*((d, "a system folder") for d in DENIED),
                        *((r, "another run's or a service's data") for r in reserved if r)]:
        for form in {folder, resolve(folder)}:
            if _inside(real, form) or _inside(form, real):
                raise ClaraAirflowError(
                    f"clara_payload {payload!r} is or contains {form} ({why}); a payload folder may not be, "
                    f"lie inside or contain it, whatever [clara] payload_root says; choose a study folder")
    if local:
        if not os.path.isdir(real):
            raise ClaraAirflowError(f"clara_payload folder {payload!r} does not exist or is not a folder")
        _refuse_sockets(real, payload)
    return real


def _normalise(path: str) -> str:
    return os.path.normpath(path).replace("//", "/")


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _refuse_sockets(folder: str, shown: str) -> None:
    """A socket in a payload (a Docker or database socket) would hand its server to the step."""
    count = 0
    todo = [folder]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                count += 1
                if count > _MAX_PAYLOAD_ENTRIES:
                    raise ClaraAirflowError(f"clara_payload {shown!r} holds over {_MAX_PAYLOAD_ENTRIES} entries; "
                                            "give one study's folder")
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISSOCK(mode):
                    raise ClaraAirflowError(f"clara_payload {shown!r} holds the socket {entry.path}; a payload may "
                                            "not hold sockets (they would give the step the server behind them)")
                if stat.S_ISDIR(mode):
                    todo.append(entry.path)


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
