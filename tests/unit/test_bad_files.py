"""Every path that looks like a pipeline is a DAG or a visible broken DAG, and `validate` reports it;
nothing is read whole before the size check; reserved and over-long names are refused."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from clara_airflow.cli import main
from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline
from clara_airflow.spec.source import MAX_BYTES, pipeline_files, read_pipeline_bytes
from tests.helpers import BASE


def odd_files(folder: Path) -> dict[str, str]:
    """name -> the words its error must contain."""
    (folder / "fifo.yaml").parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "fifo.yaml")
    (folder / "dir.yaml").mkdir()
    (folder / "dangling.yaml").symlink_to(folder / "nowhere")
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    (folder / "zero.yaml").symlink_to("/dev/zero")
    with open(folder / "huge.yaml", "wb") as handle:  # sparse: 2 GB on paper, nothing on disk
        handle.truncate(2 * 1024**3)
    return {"fifo.yaml": "a FIFO", "dir.yaml": "a folder", "dangling.yaml": "a dangling symlink",
            "loop.yaml": "a symlink loop", "zero.yaml": "a device or socket", "huge.yaml": "too large"}


def test_odd_paths_are_positioned_errors_and_nothing_is_read_whole(tmp_path: Path) -> None:
    expected = odd_files(tmp_path)
    began = time.monotonic()
    for name, words in expected.items():
        with pytest.raises(SpecError, match=words) as caught:
            read_pipeline_bytes(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}:1:1: ")
    assert time.monotonic() - began < 2, "no file may be read whole or waited on"
    assert sorted(p.name for p in pipeline_files(tmp_path)) == sorted(expected)


def test_a_file_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(SpecError, match="too large: 1,048,577 bytes"):
        load_pipeline(path)


def test_validate_reports_every_odd_path(tmp_path: Path, capsys: Any) -> None:
    expected = odd_files(tmp_path)
    (tmp_path / "good.yaml").write_text(BASE)
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    for name, words in expected.items():
        assert any(line.startswith(f"{tmp_path / name}:1:1: ") and words in line for line in out.splitlines()), name
    assert f"1 valid, {len(expected)} invalid" in err


def test_validate_of_a_folder_named_like_a_pipeline_fails(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "x.yaml").mkdir()
    assert main(["validate", str(tmp_path / "x.yaml")]) == 1
    assert "not a regular file but a folder" in capsys.readouterr().out


def test_validate_of_an_empty_folder_fails(tmp_path: Path, capsys: Any) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert "no pipeline files" in capsys.readouterr().err


def test_hidden_folders_are_skipped_by_the_one_finder(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "a.yaml").write_text(BASE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(BASE)
    (tmp_path / "clara-defaults.yaml").write_text("retries: 1\n")
    assert pipeline_files(tmp_path) == [tmp_path / "sub" / "b.yml"]


@pytest.mark.parametrize("name", ["clara_service_reaper", "CLARA_SERVICE_REAPER", "clara_error__x"])
def test_reserved_names_are_refused_at_their_position(tmp_path: Path, name: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("name: base", f"name: {name}"))
    with pytest.raises(SpecError, match=f"p.yaml:2:7: pipeline name '{name}' is reserved by clara-airflow"):
        load_pipeline(path)


def test_an_over_long_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("name: base", "name: " + "n" * 251))
    with pytest.raises(SpecError, match="p.yaml:2:7: invalid name"):
        load_pipeline(path)


def test_the_loader_turns_each_odd_path_into_a_visible_broken_dag(tmp_path: Path, airflow_db: None) -> None:
    from clara_airflow.loader import ERROR_TAG, load_dags

    expected = odd_files(tmp_path)
    (tmp_path / "long.yaml").write_text(BASE.replace("name: base", "name: " + "n" * 251))
    (tmp_path / "reaper.yaml").write_text(BASE.replace("name: base", "name: clara_service_reaper"))
    (tmp_path / "good.yaml").write_text(BASE)
    dags = load_dags({}, tmp_path, reaper=False)
    broken = {d.dag_id: d for d in dags.values() if ERROR_TAG in d.tags}
    assert "base" in dags and ERROR_TAG not in dags["base"].tags
    assert len(broken) == len(expected) + 2
    assert "clara_service_reaper" not in dags, "a pipeline may never take the reaper's id"
    assert all(len(dag_id) <= 250 for dag_id in broken)
    assert all(str(tmp_path) not in (d.description or "") + (d.doc_md or "") for d in broken.values()), \
        "broken-DAG docs show paths relative to the dags folder, not host paths"


def test_two_loader_files_define_the_reaper_once(tmp_path: Path, monkeypatch: Any) -> None:
    from clara_airflow.loader import defines_reaper, loader_files

    for name in ("b_loader.py", "a_loader.py"):
        (tmp_path / name).write_text("from clara_airflow.loader import load_dags\nload_dags(globals(), __file__)\n")
    (tmp_path / "other.py").write_text("print('airflow dag')\n")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path))
    assert loader_files(tmp_path) == [tmp_path / "a_loader.py", tmp_path / "b_loader.py"]
    assert defines_reaper(tmp_path / "a_loader.py") and not defines_reaper(tmp_path / "b_loader.py")


def test_a_dagbag_with_two_loader_files_has_one_reaper_and_no_import_error(tmp_path: Path, monkeypatch: Any,
                                                                           airflow_db: None) -> None:
    from clara_airflow.airflow_compat import dagbag

    for sub, name in (("one", "first"), ("two", "second")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "clara_pipelines.py").write_text(
            "# airflow dag\nfrom clara_airflow.loader import load_dags\n\nload_dags(globals(), __file__)\n")
        (tmp_path / sub / f"{name}.yaml").write_text(BASE.replace("name: base", f"name: {name}"))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path))
    bag = dagbag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    assert {"first", "second", "clara_service_reaper"} <= set(bag.dags)
    assert bag.dags["clara_service_reaper"].fileloc.endswith("one/clara_pipelines.py")
