"""The loader, rule by rule: strict mode's message, the broken-DAG placeholder (its id, description,
docs and task), the catch-all for internal errors, the parse cache, the name pre-scan used when a
worker parses for one DAG, and which .py files count as loader files. No database is needed: DAGs are
only built, never run. Messages are pinned exactly so that the mutation pass sees every change."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from clara_airflow import loader
from clara_airflow.errors import ClaraAirflowError
from clara_airflow.loader import ERROR_TAG, error_dag, load_dags, loader_files
from tests.helpers import BASE

BROKEN = "api-version: 0.4.0\nname: [unclosed\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def named(name: str) -> str:
    return BASE.replace("name: base", f"name: {name}")


# -- strict mode and the error DAGs ------------------------------------------------------------------
def test_strict_mode_raises_one_error_listing_every_broken_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: a\n")
    write(tmp_path, "b.yaml", "name: b\n")
    write(tmp_path, "good.yaml", BASE)
    with pytest.raises(ClaraAirflowError) as caught:
        load_dags({}, tmp_path, strict=True, reaper=False)
    lines = str(caught.value).splitlines()
    assert lines[0] == "broken Clara pipelines:"
    files = [line.split(":")[0] for line in lines[1:]]
    assert files == sorted(files) and set(files) == {str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")}


def test_without_strict_every_file_is_a_dag_and_the_namespace_gets_them(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", BASE)
    write(tmp_path, "bad.yaml", BROKEN)
    namespace: dict[str, Any] = {"keep": 1}
    dags = load_dags(namespace, tmp_path, strict=False, reaper=False)
    assert set(dags) == {"base", "clara_error__bad_yaml"}
    assert namespace == {"keep": 1, **dags}


def test_the_error_dag_is_paused_tagged_and_tells_how_to_check_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sub/bad file.yaml", "no name here\n")
    text = f"{tmp_path}/sub/bad file.yaml:2:3: first problem\n{tmp_path}/sub/bad file.yaml:4:1: second"
    dag = error_dag(path, text, tmp_path, taken=set())
    relative = "sub/bad file.yaml:2:3: first problem\nsub/bad file.yaml:4:1: second"
    assert dag.dag_id == "clara_error__sub_bad_file_yaml"
    assert dag.description == "BROKEN: sub/bad file.yaml:2:3: first problem"
    assert dag.doc_md == ("# Broken Clara pipeline `sub/bad file.yaml`\n\nThis file could not be loaded; no run can "
                          "start until it is fixed. Every problem, as `file:line:col: message`:\n\n"
                          f"```\n{relative}\n```\n\nCheck it locally with `clara-airflow validate sub/bad file.yaml`.")
    assert list(dag.tags) == ["clara", ERROR_TAG] or set(dag.tags) == {"clara", ERROR_TAG}
    assert dag.is_paused_upon_creation is True and dag.schedule is None
    (task,) = dag.tasks
    assert task.task_id == "clara_compile_error" and task.message == relative


def test_an_error_without_text_still_says_something(tmp_path: Path) -> None:
    dag = error_dag(write(tmp_path, "x.yaml", ""), "", tmp_path, taken=set())
    assert dag.description == "BROKEN: unknown error"


def test_the_description_is_cut_at_200_characters(tmp_path: Path) -> None:
    dag = error_dag(write(tmp_path, "x.yaml", ""), "e" * 300, tmp_path, taken=set())
    assert dag.description == ("BROKEN: " + "e" * 300)[:200]


@pytest.mark.parametrize(("length", "cut"), [(195, False), (200, False), (201, True), (260, True)])
def test_a_long_file_name_gives_a_short_unique_id(tmp_path: Path, length: int, cut: bool) -> None:
    relative = "d" * 100 + "/" + "f" * (length - 106) + ".yaml"
    dag = error_dag(write(tmp_path, relative, ""), "x", tmp_path, taken=set())
    slug = relative.replace("/", "_").replace(".", "_")
    digest = hashlib.sha256(relative.encode()).hexdigest()[:12]
    expected = f"{slug[:180]}_{digest}" if cut else slug
    assert dag.dag_id == "clara_error__" + expected


@pytest.mark.parametrize(("name", "taken", "text", "usable"), [
    ("mine", set(), "x", True),
    ("m" * 250, set(), "x", True),
    ("m" * 251, set(), "x", False),
    ("clara_service_reaper", set(), "x", False),
    ("Clara_Service_Reaper", set(), "x", False),
    ("clara_error__mine", set(), "x", False),
    ("CLARA_ERROR__mine", set(), "x", False),
    ("mine", {"mine"}, "x", False),
    ("mine", set(), "a.yaml:1:1: duplicate pipeline name 'mine' (also in b.yaml)", False),
])
def test_the_error_dag_keeps_the_pipelines_name_when_it_can(tmp_path: Path, name: str, taken: set[str], text: str,
                                                            usable: bool) -> None:
    path = write(tmp_path, "p.yaml", f"name: {name}\nbroken: [\n")
    dag = error_dag(path, text, tmp_path, taken=taken)
    assert dag.dag_id == (name if usable else "clara_error__p_yaml")


def test_a_placeholder_that_cannot_be_built_hides_nothing(tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    write(tmp_path, "good.yaml", BASE)
    write(tmp_path, "bad.yaml", BROKEN)
    write(tmp_path, "worse.yaml", BROKEN)

    def failing(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == "bad.yaml":
            raise RuntimeError("cannot")
        return real(path, *args, **kwargs)

    real = loader.error_dag
    monkeypatch.setattr(loader, "error_dag", failing)
    with caplog.at_level(logging.ERROR, logger="clara_airflow.loader"):
        dags = load_dags({}, tmp_path, strict=False, reaper=False)
    assert set(dags) == {"base", "clara_error__worse_yaml"}
    assert f"clara-airflow: cannot build the error DAG of {tmp_path / 'bad.yaml'}" in caplog.messages


# -- building each file -----------------------------------------------------------------------------
def test_an_internal_error_is_a_broken_dag_asking_for_a_report(tmp_path: Path, monkeypatch: Any,
                                                               caplog: Any) -> None:
    path = write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", named("other"))

    def compile_or_fail(where: Path, deployment: dict[str, Any], destinations: Any = None, gpus: Any = None) -> Any:
        if where == path:
            raise KeyError("boom")
        return real(where, deployment)

    real = loader._compile
    monkeypatch.setattr(loader, "_compile", compile_or_fail)
    with caplog.at_level(logging.INFO, logger="clara_airflow.loader"):
        dags = load_dags({}, tmp_path, strict=False, reaper=False)
    assert "other" in dags
    (task,) = dags["base"].tasks
    assert task.message == "a.yaml:1:1: internal error in clara-airflow (KeyError: 'boom'); please report it with this file"
    assert f"clara-airflow: internal error while loading {path}" in caplog.messages
    assert any(m.startswith("clara-airflow: b.yaml -> DAG other in ") and m.endswith(" ms") for m in caplog.messages)


def test_a_spec_error_is_logged_with_its_positions(tmp_path: Path, caplog: Any) -> None:
    path = write(tmp_path, "a.yaml", BROKEN)
    with caplog.at_level(logging.ERROR, logger="clara_airflow.loader"):
        load_dags({}, tmp_path, strict=False, reaper=False)
    (message,) = [m for m in caplog.messages if "is not loaded" in m]
    assert message.startswith(f"clara-airflow: {path} is not loaded:\n{path}:3:1: invalid YAML")


def test_the_build_time_is_logged_in_milliseconds(tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    write(tmp_path, "a.yaml", BASE)
    clock = iter([10.0, 10.25])
    monkeypatch.setattr(loader.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="clara_airflow.loader"):
        load_dags({}, tmp_path, strict=False, reaper=False)
    assert "clara-airflow: a.yaml -> DAG base in 250.0 ms" in caplog.messages


def test_a_broken_defaults_file_breaks_every_pipeline_with_its_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", named("other"))
    write(tmp_path, "clara-defaults.yaml", "resources: [\n")
    dags = load_dags({}, tmp_path, strict=False, reaper=False)
    assert len(dags) == 2 and all(ERROR_TAG in d.tags for d in dags.values())
    assert all("clara-defaults.yaml" in d.tasks[0].message for d in dags.values())


def test_a_duplicate_name_is_an_error_on_the_second_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", named("BASE"))
    dags = load_dags({}, tmp_path, strict=False, reaper=False)
    assert ERROR_TAG not in dags["base"].tags
    (task,) = dags["clara_error__b_yaml"].tasks
    assert task.message.startswith("b.yaml:2:7: duplicate pipeline name 'BASE' (also in ")


def test_compiled_plans_are_cached_by_content_and_settings(tmp_path: Path, monkeypatch: Any) -> None:
    compiled = []
    real = loader.compile_pipeline
    monkeypatch.setattr(loader, "compile_pipeline", lambda spec, d, **k: compiled.append(1) or real(spec, d, **k))
    path = write(tmp_path, "cache-me.yaml", named("cache_me"))
    loader._compile(path, {"retries": 1})
    loader._compile(path, {"retries": 1})
    assert len(compiled) == 1
    loader._compile(path, {"retries": 2})
    path.write_text(named("cache_me") + "# changed\n")
    loader._compile(path, {"retries": 2})
    assert len(compiled) == 3


# -- parsing for one DAG --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "name"), [
    ("name: plain\n", "plain"), ("name: 'quoted'\n", "quoted"), ('name: "dq"  # note\n', "dq"),
    ("x: 1\nname:\tTabbed-1\n", "Tabbed-1"), (" name: indented\n", None), ("name: two words\n", None),
    ("names: no\n", None), (b"\xff\xfe junk\nname: after_junk\n", "after_junk"),
])
def test_the_declared_name_is_read_from_its_line(tmp_path: Path, text: str | bytes, name: str | None) -> None:
    path = tmp_path / "p.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert loader._declared_name(path) == name


def test_an_unreadable_file_has_no_declared_name(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert loader._declared_name(tmp_path / "dir.yaml") is None


@pytest.mark.parametrize(("wanted", "built"), [
    ("two", {"two"}),
    ("nobody", {"one", "two"}),  # an unknown id: everything but the reaper, as Airflow would parse it
    ("clara_service_reaper", {"one", "two", "clara_service_reaper"}),
])
def test_a_worker_parsing_for_one_dag_builds_only_its_file(tmp_path: Path, monkeypatch: Any, wanted: str,
                                                           built: set[str]) -> None:
    write(tmp_path, "one.yaml", named("one"))
    write(tmp_path, "two.yaml", named("two"))
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", wanted)
    assert set(load_dags({}, tmp_path, strict=False, reaper=True)) == built


def test_the_reaper_is_defined_only_when_asked(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", named("one"))
    assert "clara_service_reaper" in load_dags({}, tmp_path, strict=False, reaper=True)
    assert "clara_service_reaper" not in load_dags({}, tmp_path, strict=False, reaper=False)


# -- loader files ---------------------------------------------------------------------------------
def test_loader_files_are_the_visible_py_files_calling_load_dags(tmp_path: Path) -> None:
    call = "load_dags(globals(), __file__)\n"
    write(tmp_path, "b.py", call)
    write(tmp_path, "a/z.py", call)
    write(tmp_path, ".hidden/x.py", call)
    write(tmp_path, "__pycache__/x.py", call)
    write(tmp_path, "_private/x.py", call)
    write(tmp_path, ".dot.py", call)
    write(tmp_path, "c.txt", call)
    write(tmp_path, "d.py", "print('no call')\n")
    write(tmp_path, "late.py", "#" * 65536 + call)
    write(tmp_path, "edge.py", "#" * (65536 - len("load_dags(")) + call)
    write(tmp_path, "over.py", "#" * (65537 - len("load_dags(")) + call)  # ends one byte past the read
    (tmp_path / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    assert loader_files(tmp_path) == [tmp_path / "_private/x.py", tmp_path / "a/z.py", tmp_path / "b.py",
                                      tmp_path / "edge.py"]
