"""check_payload: a run's clara_payload comes from whoever triggers it and becomes a host mount."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from clara_airflow.backends.layout import DEFAULT_PAYLOAD_ROOT, check_payload
from clara_airflow.errors import ClaraAirflowError


@pytest.mark.parametrize("payload", ["/etc", "/", "/var/run", "/root", "/tmp"])
def test_the_default_root_refuses_folders_outside_it_and_names_the_setting(payload: str) -> None:
    with pytest.raises(ClaraAirflowError, match=r"outside the payload root .*\[clara\] payload_root"):
        check_payload(payload, None)
    assert DEFAULT_PAYLOAD_ROOT == "/var/lib/clara-airflow/payloads"


@pytest.mark.parametrize("payload", ["/etc", "/etc/ssl", "/proc/1", "/sys", "/dev", "/run", "/var/run", "/boot",
                                     "/root", "/", "/var"])
def test_system_folders_are_refused_even_under_payload_root_slash(payload: str) -> None:
    with pytest.raises(ClaraAirflowError, match="is or contains"):
        check_payload(payload, "/", local=False)


def test_output_root_and_service_data_are_refused_both_ways(tmp_path: Path) -> None:
    out, data = tmp_path / "output", tmp_path / "service-data"
    for folder in (out / "dag" / "run", data, out, tmp_path):
        folder.mkdir(parents=True, exist_ok=True)
        with pytest.raises(ClaraAirflowError, match="another run's or a service's data"):
            check_payload(str(folder), str(tmp_path), reserved=(str(out), str(data)))


def test_a_study_folder_inside_the_root_is_accepted(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "ct-1"
    study.mkdir(parents=True)
    (study / "a.dcm").write_bytes(b"x")
    assert check_payload(str(study), str(tmp_path), reserved=(str(tmp_path / "output"),)) == str(study)


def test_symlinks_are_resolved_before_the_check(tmp_path: Path) -> None:
    (tmp_path / "escape").symlink_to("/etc")
    with pytest.raises(ClaraAirflowError, match="outside the payload root"):
        check_payload(str(tmp_path / "escape"), str(tmp_path))
    with pytest.raises(ClaraAirflowError, match="is or contains /etc"):
        check_payload(str(tmp_path / "escape"), "/")


def test_a_folder_holding_a_socket_is_refused(tmp_path: Path) -> None:
    study = tmp_path / "study" / "deep"
    study.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(study / "engine.sock"))
        with pytest.raises(ClaraAirflowError, match="holds the socket .*engine.sock"):
            check_payload(str(tmp_path / "study"), str(tmp_path))
    finally:
        server.close()


@pytest.mark.parametrize("payload", ["relative/path", "/a/../etc", "/a\nb", "/" + "a" * 5000, 42, None])
def test_malformed_values_are_refused(payload: object) -> None:
    with pytest.raises(ClaraAirflowError, match="clara_payload"):
        check_payload(payload, "/")


def test_kubernetes_checks_the_text_only(tmp_path: Path) -> None:
    assert check_payload("/incoming/study-1/", "/incoming", local=False) == "/incoming/study-1"
    with pytest.raises(ClaraAirflowError, match="outside the payload root"):
        check_payload("/other/study", "/incoming", local=False)
    assert not os.path.exists("/incoming/study-1")
