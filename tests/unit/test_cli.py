"""The clara-airflow command: validate exit codes and messages, the inspect JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clara_airflow.cli import main
from tests.helpers import BASE, INVALID, VALID, expected_errors


def test_validate_valid_files_exits_0(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["validate", *map(str, VALID)]) == 0
    assert f"{len(VALID)} valid, 0 invalid" in capsys.readouterr().err


def test_validate_prints_positioned_errors_and_exits_1(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["validate", *map(str, INVALID)]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = expected_errors()
    assert len(out) == len(INVALID)
    for line, path in zip(out, INVALID, strict=True):
        assert line.startswith(f"{path}:{expected[path.name][1]}:")


def test_validate_reports_duplicate_pipeline_names(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = VALID[0].read_text()
    (tmp_path / "a.yaml").write_text(source)
    (tmp_path / "b.yaml").write_text(source)
    assert main(["validate", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, "only the second file is reported, once"
    assert lines[0].startswith(f"{tmp_path / 'b.yaml'}:") and "duplicate pipeline name" in lines[0]
    assert f"(also in {tmp_path / 'a.yaml'})" in lines[0]


def test_inspect_json_contract() -> None:
    path = next(p for p in VALID if p.name.startswith("05-"))
    proc = subprocess.run([sys.executable, "-m", "clara_airflow.cli", "inspect", str(path), "--json"],
                          capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    assert data["dag_id"] == "liver-lesion-triage"
    op = data["operators"][1]
    assert set(op) >= {"name", "image", "tag", "command", "env", "upstream", "requests"}
    assert op == {**op, "name": "liver-seg", "image": "example/liver-seg", "tag": "1.0", "command": [],
                  "env": ["NVIDIA_CLARA_TRTISURI"], "upstream": ["series-reader"],
                  "requests": {"cpu": 1, "memory": 512, "gpu": 0}}
    (svc,) = data["services"]
    assert svc["identity"] == {"image": "nvcr.io/nvidia/tensorrtserver", "tag": "19.08-py3",
                               "command": ["trtserver", "--model-store=$(NVIDIA_CLARA_SERVICE_DATA_PATH)/models"]}
    assert svc["names"] == ["trtis"]
    assert svc["connections"] == {"NVIDIA_CLARA_TRTISURI": 8000}


def test_inspect_substitutes_given_parameters(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "08.yaml"
    text = next(p for p in VALID if p.name.startswith("08-")).read_text()
    path.write_text(text + "x-airflow:\n  parameters:\n    TOOL_IMAGE: {enum: [example/assembly-tools, lab/tools]}\n")
    assert main(["inspect", str(path), "--param", "TOOL_IMAGE=lab/tools", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {op["image"] for op in data["operators"]} == {"lab/tools"}
    assert data["operators"][0]["tag"] == "2.0"


def test_inspect_text_summary(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["inspect", str(VALID[2])]) == 0
    out = capsys.readouterr().out
    assert "operator mask-merger" in out and "after: roi-cutter, kidney-seg, pancreas-seg" in out


@pytest.mark.parametrize("path", INVALID[:2], ids=lambda p: p.name)
def test_inspect_of_invalid_file_exits_1(path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["inspect", str(path)]) == 1
    assert f"{path}:" in capsys.readouterr().err


def test_services_stop_passes_force_and_volumes(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from clara_airflow.services import admin

    calls = []
    monkeypatch.setattr(admin, "stop_service", lambda ref, **kw: calls.append((ref, kw)) or f"stopped {ref}")
    assert main(["services", "stop", "triton", "--volumes"]) == 0
    assert main(["services", "stop", "clara-svc-0123456789ab", "--force"]) == 0
    assert calls == [("triton", {"force": False, "volumes": True}),
                     ("clara-svc-0123456789ab", {"force": True, "volumes": False})]
    assert capsys.readouterr().out.splitlines() == ["stopped triton", "stopped clara-svc-0123456789ab"]


def test_validate_checks_settings_that_clash_once_merged(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "nightly.yaml").write_text("api-version: 0.4.0\nname: nightly\nx-airflow:\n  schedule: '@daily'\n"
                                           "operators:\n- name: a\n  container: {image: busybox}\n")
    assert main(["validate", str(tmp_path / "nightly.yaml")]) == 1
    assert "nightly.yaml:4:3: schedule '@daily' (from the x-airflow block) needs a default input payload" in \
        capsys.readouterr().out
    (tmp_path / "clara-defaults.yaml").write_text("payload:\n  input: /data/incoming\n")
    assert main(["validate", str(tmp_path / "nightly.yaml")]) == 0


def test_services_list_prints_a_table_with_ttl_and_leases(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from clara_airflow.services import admin

    rows = [{"id": "6f43604d0b13", "state": "running", "image": "clara-airflow/kserve-stub", "tag": "0.1",
             "backend": "docker", "host": "clara-svc-6f43604d0b13", "started_at": "2026-12-02T22:46:09+00:00",
             "last_used": "2026-12-02T22:46:28+00:00", "idle_ttl": 3600, "names": ["ct-inference"],
             "leases": [{"dag_id": "ct-organ-triage", "run_id": "manual__1", "state": "running"}]},
            {"id": "feedfacecafe", "state": "running (orphan: no record)", "image": "?", "tag": "?",
             "backend": "docker", "names": [], "orphan": True, "leases": []}]
    monkeypatch.setattr(admin, "service_rows", lambda: rows)
    assert main(["services", "list"]) == 0
    header, first, orphan = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "IMAGE", "BACKEND", "ADDRESS", "STARTED", "LAST", "USED", "IDLE", "TTL",
                              "LEASES", "NAMES"]
    assert first.split() == ["6f43604d0b13", "running", "clara-airflow/kserve-stub:0.1", "docker",
                             "clara-svc-6f43604d0b13", "2026-12-02T22:46:09+00:00", "2026-12-02T22:46:28+00:00",
                             "3600", "s", "1", "ct-inference"]
    assert orphan.startswith("feedfacecafe  running (orphan: no record)")
    assert main(["services", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["leases"][0]["run_id"] == "manual__1"


def test_warnings_are_printed_once_and_only_with_the_flag(capsys) -> None:  # type: ignore[no-untyped-def]
    path = next(p for p in VALID if p.name.startswith("02-"))
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "warning:" not in out + err.split("valid,")[0] and "1 warning(s) not shown" in err
    assert main(["validate", "--warnings", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.count("warning: variable TRACE_LEVEL") == 1 and "warning:" not in err


def test_an_undeclared_placeholder_used_twice_is_reported_once(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace('tag: "1.0"', 'tag: "${{ X }}-${{ X }}"'))
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.count("undeclared parameter 'X'") == 1


def test_inspect_json_has_env_values_and_pull_secrets(capsys) -> None:  # type: ignore[no-untyped-def]
    path = next(p for p in VALID if p.name.startswith("04-"))
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (svc,) = data["services"]
    assert data["pull_secrets"] == []
    assert data["operators"][0]["env_values"] == {"NVIDIA_CLARA_TRTISURI": f"clara-svc-{svc['id']}:8000"}


def test_help_has_no_rst_markup(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`clara-airflow inspect ... | head -1`: no BrokenPipeError traceback."""
    import subprocess
    import sys

    from tests.helpers import REPO

    pipeline = tmp_path / "wide.yaml"  # an inspect output far over a pipe's 64 KiB buffer
    steps = "".join(f"- name: step-{i:03d}\n  container: {{image: clara-airflow/busybox, tag: '1', command: "
                    f"[/bin/sh, -c, 'echo {'x' * 200}']}}\n" for i in range(400))
    pipeline.write_text(f"api-version: 0.4.0\nname: wide\noperators:\n{steps}")
    command = (f"{sys.executable} -c 'from clara_airflow.cli import main; import sys; sys.exit(main())' "
               f"inspect --json {pipeline} | head -c 1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=REPO)
    assert done.stdout == "{" and done.stderr == "", done.stderr
    assert done.returncode == 0
