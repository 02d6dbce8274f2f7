"""layout.py rule by rule, with every message pinned: run folder names, payload checks and their bounds,
step users, and where each mount's host folder is."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.backends import layout
from clara_airflow.backends.layout import (
    check_payload,
    claim_run_folder,
    host_source,
    reset_step_folder,
    run_folder_name,
)
from clara_airflow.compiler.plan import MountPlan
from clara_airflow.errors import ClaraAirflowError


@pytest.mark.parametrize(("run_id", "folder"), [("manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00"),
                                                (".", "_."), ("..", "_.."), ("a/b c", "a_b_c"), ("ok-1.2_x", "ok-1.2_x"),
                                                (".clara-studies", "_.clara-studies")])
def test_run_folder_names(run_id: str, folder: str) -> None:
    assert run_folder_name(run_id) == folder


def test_another_runs_folder_message(tmp_path: Path) -> None:
    folder = claim_run_folder(str(tmp_path), "d", "r;1")
    with pytest.raises(ClaraAirflowError) as caught:
        claim_run_folder(str(tmp_path), "d", "r:1")
    assert str(caught.value) == (f"output folder {folder} belongs to run 'r;1', not 'r:1'; refusing to write into it "
                                 "so no earlier run's outputs are overwritten (use a run id that differs in A-Za-z0-9._-)")


def test_an_unnamed_output_is_the_step_folder_itself_and_a_retry_may_recreate(tmp_path: Path) -> None:
    own = reset_step_folder(tmp_path, "a", [])
    assert own == tmp_path / "a" and own.is_dir() and list(own.iterdir()) == []
    reset_step_folder(tmp_path, "a", ["x", "x"])  # the same folder twice is no error
    assert [p.name for p in own.iterdir()] == ["x"]


@pytest.mark.parametrize(("value", "local", "message"), [
    ("w", True, "[clara] step_user 'w' must be UID, UID:GID or 'worker'"),
    ("worker", False, "[clara] step_user 'worker' must be UID or UID:GID (numeric; 'worker' is Docker only)"),
    ("1:2:3", True, "[clara] step_user '1:2:3' must be UID, UID:GID or 'worker'")])
def test_bad_step_users_are_named(value: str, local: bool, message: str) -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        layout.step_user(value, local=local)
    assert str(caught.value) == message


def test_hand_over_skips_only_no_user_or_a_non_root_worker_handing_to_itself(tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: calls.append((str(path), uid, gid)))
    (tmp_path / "x").mkdir()
    layout.hand_over(tmp_path, None)
    assert calls == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    layout.hand_over(tmp_path, (0, 5))  # root hands to root: still chowns (gid may differ)
    assert calls == [(str(tmp_path), 0, 5), (str(tmp_path / "x"), 0, 5)]
    calls.clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    layout.hand_over(tmp_path, (1000, 7))
    assert calls == []
    layout.hand_over(tmp_path, (1001, 1000))
    assert len(calls) == 2


@pytest.mark.parametrize(("payload", "message"), [
    ("rel", "clara_payload must be the absolute path of the input payload folder, not 'rel'; set it in the trigger "
            "form or in x-airflow.payload.input"),
    ("/a\x1fb", "clara_payload '/a\\x1fb' is over 4096 characters or holds a control character; give a plain folder path"),
    ("/a\x7fb", "clara_payload '/a\\x7fb' is over 4096 characters or holds a control character; give a plain folder path"),
    ("/x/../y", "clara_payload '/x/../y' must not contain '..'"),
    ("/other", "clara_payload '/other' is outside the payload root '/srv'; put the study below it, or point [clara] "
               "payload_root (AIRFLOW__CLARA__PAYLOAD_ROOT) at the folder your payloads live in"),
])
def test_payload_messages(payload: str, message: str) -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        check_payload(payload, "/srv", local=False)
    assert str(caught.value) == message


def test_the_length_bound_is_exact_and_spaces_are_fine() -> None:
    ok = "/srv/" + "a" * (4096 - 5)
    assert check_payload(ok, "/srv", local=False) == ok
    assert check_payload("/srv/study one", "/srv", local=False) == "/srv/study one"
    assert check_payload("/srv//study", "/srv", local=False) == "/srv/study"
    with pytest.raises(ClaraAirflowError, match="over 4096 characters"):
        check_payload(ok + "a", "/srv", local=False)


@pytest.mark.parametrize(("payload", "reserved", "message"), [
    ("/etc/x", (), "clara_payload '/etc/x' is or contains /etc (a system folder); a payload folder may not be, lie "
                   "inside or contain it, whatever [clara] payload_root says; choose a study folder"),
    ("/data/out/r", ("/data/out",), "clara_payload '/data/out/r' is or contains /data/out (another run's or a "
                                     "service's data); a payload folder may not be, lie inside or contain it, whatever "
                                     "[clara] payload_root says; choose a study folder")])
def test_refusal_messages_name_what_is_protected(payload: str, reserved: tuple[str, ...], message: str) -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        check_payload(payload, "/", local=False, reserved=reserved)
    assert str(caught.value) == message
    check_payload("/data/in", "/", local=False, reserved=("", "/data/out"))  # an empty reserved entry is ignored


def test_a_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        check_payload(str(tmp_path / "nope"), str(tmp_path))
    assert str(caught.value) == f"clara_payload folder '{tmp_path / 'nope'}' does not exist or is not a folder"


def test_the_entry_bound_and_the_socket_message(tmp_path: Path, monkeypatch: Any) -> None:
    study = tmp_path / "s"
    (study / "d").mkdir(parents=True)
    for n in range(3):
        (study / "d" / f"f{n}").write_text("x")
    monkeypatch.setattr(layout, "_MAX_PAYLOAD_ENTRIES", 4)  # d + 3 files: exactly the bound
    assert check_payload(str(study), str(tmp_path)) == str(study)
    (study / "f3").write_text("x")
    with pytest.raises(ClaraAirflowError) as caught:
        check_payload(str(study), str(tmp_path))
    assert str(caught.value) == f"clara_payload '{study}' holds over 4 entries; give one study's folder"
    monkeypatch.setattr(layout, "_MAX_PAYLOAD_ENTRIES", 500_000)
    (study / "f3").unlink()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(study / "d" / "s.sock"))
        (study / "link").symlink_to("/var/run")  # a symlink is not followed into the host's sockets
        with pytest.raises(ClaraAirflowError) as caught:
            check_payload(str(study), str(tmp_path))
        assert str(caught.value) == (f"clara_payload '{study}' holds the socket {study / 'd' / 's.sock'}; a payload "
                                     "may not hold sockets (they would give the step the server behind them)")
    finally:
        server.close()
    assert layout._MAX_PAYLOAD_ENTRIES == 500_000


def test_a_symlinked_socket_elsewhere_is_not_followed(tmp_path: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    (study / "link").symlink_to("/var/run/docker.sock")
    assert check_payload(str(study), str(tmp_path)) == str(study)


@pytest.mark.parametrize(("mount", "source"), [
    (MountPlan("/in", "payload", True), "/payloads/ct"),
    (MountPlan("/prev", "upstream", True, operator="a"), "RUN/a"),
    (MountPlan("/prev", "upstream", True, operator="a", sub="left"), "RUN/a/left"),
    (MountPlan("/out", "output", False, operator="b", sub="mask"), "RUN/b/mask"),
    (MountPlan("/out", "output", False, operator="b"), "RUN/b"),
    (MountPlan("/m", "host", True, source="/models"), "/models")])
def test_host_sources(tmp_path: Path, mount: MountPlan, source: str) -> None:
    (tmp_path / "a" / "left").mkdir(parents=True)
    assert host_source(mount, tmp_path, "/payloads/ct") == source.replace("RUN", str(tmp_path))


def test_a_missing_upstream_output_says_to_rerun_it(tmp_path: Path) -> None:
    with pytest.raises(ClaraAirflowError) as caught:
        host_source(MountPlan("/prev", "upstream", True, operator="a"), tmp_path, "/p")
    assert str(caught.value) == f"the output folder {tmp_path / 'a'} of upstream operator 'a' is missing; re-run that task first"
    assert host_source(MountPlan("/out", "output", False, operator="z"), tmp_path, "/p") == str(tmp_path / "z")


@pytest.mark.parametrize("payload", ["//etc", "//etc/ssl", "///proc"])
def test_posix_double_slash_paths_are_not_a_way_around_the_deny_list(payload: str) -> None:
    with pytest.raises(ClaraAirflowError, match="is or contains"):
        check_payload(payload, "/", local=False)
