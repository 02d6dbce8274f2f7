"""The Kubernetes step pod as data: pod_run() decides volumes, mounts, the init container and labels
without a cluster or an operator (the golden tests check the same pods through the operator)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from clara_airflow.backends.kubernetes_steps import PREPARE_SCRIPT, label_value, pod_name, pod_run
from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.spec.load import load_pipeline
from tests.helpers import VALID

RUN_ID = "manual__2026-12-04T10:00:00+00:00"


def step_of(prefix: str = "02-") -> object:
    plan = compile_pipeline(load_pipeline(next(p for p in VALID if p.name.startswith(prefix))))
    return plan.steps[0]  # reads the payload


@pytest.mark.parametrize(("claim", "volumes"), [("clara-data", ["clara-payload"]),
                                                (None, ["clara-payload", "clara-output"])])
def test_a_pod_reads_its_payload_and_writes_below_the_run_folder(claim: str | None, volumes: list[str]) -> None:
    step = step_of()
    run = pod_run(step, {"A": "1"}, "/incoming/study-1", dag_id="d", run_id=RUN_ID, claim=claim,  # type: ignore[arg-type]
                  output_root="/clara/out", init_image="busybox:1.36")
    assert [v.name for v in run.volumes] == volumes
    assert [(e.name, e.value) for e in run.env] == [("A", "1")]
    assert run.image == f"{step.image}:{step.tag}" and run.args == list(step.command)  # type: ignore[attr-defined]
    (init,) = run.init_containers
    env = {e.name: e.value for e in init.env}
    assert init.command == ["/bin/sh", "-c", PREPARE_SCRIPT] and init.image == "busybox:1.36"
    assert env["CLARA_RUN_ID"] == RUN_ID and "CLARA_OWNER" not in env
    assert env.get("CLARA_PAYLOAD_CHECK") == ("/clara-claim/incoming/study-1" if claim else None)
    assert env["CLARA_RUN_DIR"].startswith("d/")
    (mount,) = init.volume_mounts  # the volume's root: the init container makes every folder itself
    assert mount.sub_path is None and not mount.read_only
    assert (mount.mount_path, env["CLARA_ROOT"]) == (("/clara-claim", "/clara-claim/clara/out") if claim
                                                     else ("/clara-output", "/clara-output"))
    kinds = [m.kind for m in step.mounts]  # type: ignore[attr-defined]
    assert len(kinds) == len(run.volume_mounts)
    assert [m.read_only for m in run.volume_mounts] == [kind != "output" for kind in kinds]
    assert run.labels["clara-airflow/dag-id"] == "d"


@pytest.mark.parametrize(("text", "valid"), [("ct-denoise", True), ("a" * 63, True), ("a" * 64, False),
                                             ("manual__2026-12-04T10:00:00+00:00", False), ("_x_", False)])
def test_label_values_are_kept_when_valid_and_hashed_when_not(text: str, valid: bool) -> None:
    value = label_value(text)
    assert (value == text) is valid
    assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()


def test_pod_names_are_lower_case_dns_labels() -> None:
    assert pod_name("Dicom_Reader") == "clara-dicom-reader"
    assert len(pod_name("x" * 100)) <= 50


def _prepare(root: str, run_id: str, step: str) -> subprocess.Popen[bytes]:

    env = {"CLARA_ROOT": root, "CLARA_RUN_DIR": "d/run", "CLARA_RUN_ID": run_id, "CLARA_STEP": step,
           "CLARA_SUBS": "a b", "HOSTNAME": f"pod-{step}", "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(["/bin/sh", "-c", PREPARE_SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_the_run_marker_is_claimed_atomically_by_parallel_steps(tmp_path: object) -> None:
    """300 steps of one run start together and all proceed; a step of another run is refused with the
    owner's id. (The marker is complete before it is visible, by construction: a temp file hard-linked.
    On a local disk the old `set -C` write passes this too; its empty-marker window needs a slow
    filesystem such as NFS, where it was seen.)"""
    root = str(tmp_path)
    for round_ in range(3):
        procs = [_prepare(f"{root}/{round_}", "run-A", f"s{i}") for i in range(100)]
        answers = [(p.communicate()[1].decode(), p.returncode) for p in procs]  # communicate closes the pipes
        failures = [err for err, code in answers if code != 0]
        assert failures == []
    other = _prepare(f"{root}/0", "run-B", "late")
    _, err = other.communicate()
    assert other.returncode == 1 and "belongs to run run-A, not run-B" in err.decode()
    assert sorted(p.name for p in (tmp_path / "0" / "d" / "run").iterdir())[:3] == [".clara-run-id", "s0", "s1"]  # type: ignore[operator]


def test_storage_without_hard_links_is_named_not_a_missing_marker(tmp_path: Any) -> None:
    """Azure Files over SMB refuses link(): the init container says so, instead of 'cat: no such file'."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ln").write_text("#!/bin/sh\necho 'ln: Operation not permitted' >&2\nexit 1\n")
    (bin_dir / "ln").chmod(0o755)
    env = {"CLARA_ROOT": str(tmp_path / "claim"), "CLARA_RUN_DIR": "d/run", "CLARA_RUN_ID": "run-A",
           "CLARA_STEP": "s", "CLARA_SUBS": "", "CLARA_CLAIM": "clara-data", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", PREPARE_SCRIPT], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "cannot make a hard link in" in done.stderr and "on clara-data: run folders need storage with hard links" \
        in done.stderr
    assert [p.name for p in (tmp_path / "claim" / "d" / "run").iterdir()] == [], "its temp file is removed"


def test_a_claim_root_the_step_user_cannot_write_names_the_fix(tmp_path: Any) -> None:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    top = Path(tempfile.mkdtemp(prefix="clara-claim-"))  # pytest's own tmp_path is 0700: UID 1000 could not enter
    top.chmod(0o755)
    root = top / "claim"
    root.mkdir(mode=0o755)  # root:root 0755, as an NFS export's root: fsGroup is never applied to it
    env = {"CLARA_ROOT": str(root / "out"), "CLARA_RUN_DIR": "d/run", "CLARA_RUN_ID": "run-A", "CLARA_STEP": "s",
           "CLARA_SUBS": "", "CLARA_CLAIM": "clara-data", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/bin/sh", "-c", PREPARE_SCRIPT],
                          env=env, capture_output=True, text=True) if os.geteuid() == 0 else None
    if done is None:
        pytest.skip("needs root to run the script as another user")
    try:
        assert done.returncode == 2, done.stderr
        os.chown(root, 0, 1000)  # what the admin job of docs/kubernetes.md does, once
        root.chmod(0o2775)
        fixed = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/bin/sh", "-c",
                                PREPARE_SCRIPT], env=env, capture_output=True, text=True)
        assert fixed.returncode == 0, fixed.stderr
        assert (root / "out" / "d" / "run" / "s").stat().st_gid == 1000
    finally:
        shutil.rmtree(top)
    assert f"cannot create the output folder {root}/out/d/run on clara-data as 1000:1000: make the claim's root " \
           "group-owned by 1000, group-writable and setgid, once (chgrp 1000; chmod 2775" in done.stderr
