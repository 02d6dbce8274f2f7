"""The loader in a real DagBag: every example becomes a DAG, broken files stay visible and isolated."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers import INVALID, VALID

LOADER = REPO / "dags" / "clara_pipelines.py"


def bag_of(folder: Path) -> Any:
    from clara_airflow.airflow_compat import dagbag

    return dagbag(dag_folder=str(folder))


@pytest.fixture
def folder(tmp_path: Path, airflow_db: None) -> Path:
    shutil.copy(LOADER, tmp_path)
    return tmp_path


def test_repository_dags_folder_loads(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert {"ct-organ-triage", "it-fan", "it-shared", "it-fail"} <= set(dagbag.dags)
    dag = dagbag.dags["ct-organ-triage"]
    assert "clara" in dag.tags
    # The tests' copy of the demo pipeline has a service identity of its own (tests/conftest.py).
    ensure = "clara_services.ensure_4ee8ef1cb1ba"
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks if not t.task_id.startswith("clara_")} == {
        "dicom-to-volume": [],
        "bone-seg": [ensure, "dicom-to-volume"],
        "lung-seg": [ensure, "dicom-to-volume"],
        "report": ["bone-seg", "dicom-to-volume", "lung-seg"],
    }


def test_every_shared_example_becomes_a_dag(folder: Path) -> None:
    for path in VALID:
        shutil.copy(path, folder)
    bag = bag_of(folder)
    assert bag.import_errors == {}
    from clara_airflow.spec.load import load_pipeline

    expected = {load_pipeline(p).name for p in VALID}
    assert set(bag.dags) == expected | {"clara_service_reaper"}
    for dag in (bag.dags[name] for name in expected):
        assert "clara-compile-error" not in dag.tags
        assert "clara_payload" in dag.params


def test_dag_docs_params_and_services(folder: Path) -> None:
    shutil.copy(next(p for p in VALID if p.name.startswith("08-")), folder)
    shutil.copy(next(p for p in VALID if p.name.startswith("05-")), folder)
    bag = bag_of(folder)
    dag = bag.dags["read-assembly"]
    assert dag.params["TOOL_TAG"] == "2.0"
    assert set(dag.params) == {"clara_payload", "TOOL_IMAGE", "TOOL_TAG", "ALIGN_THREADS", "POLISH_ROUNDS"}
    shared = bag.dags["liver-lesion-triage"]
    assert "| `liver-seg` | `example/liver-seg:1.0` |" in shared.doc_md
    assert "clara-svc-92c1ca59d126" in shared.doc_md
    ensure = shared.get_task("clara_services.ensure_92c1ca59d126")
    assert ensure.downstream_task_ids == {"liver-seg", "lesion-classifier", "clara_services.release_leases"}
    assert ensure.is_setup
    release = shared.get_task("clara_services.release_leases")
    assert release.is_teardown
    assert release.upstream_task_ids >= {"series-reader", "liver-seg", "lesion-classifier", "register-viewer"}


def test_a_broken_yaml_leaves_the_others_loading_and_is_visible(folder: Path) -> None:
    for path in VALID[:3]:
        shutil.copy(path, folder)
    for path in INVALID:
        shutil.copy(path, folder / f"broken-{path.name}")
    bag = bag_of(folder)
    assert bag.import_errors == {}
    good = [d for d in bag.dags.values() if not {"clara-compile-error", "maintenance"} & set(d.tags)]
    broken = [d for d in bag.dags.values() if "clara-compile-error" in d.tags]
    assert len(good) == 3
    assert len(broken) == len(INVALID)
    unknown = bag.dags["args-instead-of-command"]
    assert "broken-02-unknown-key.yaml:9:3: unknown key 'args'" in unknown.description
    assert "broken-02-unknown-key.yaml:9:3:" in unknown.doc_md
    assert [t.task_id for t in unknown.tasks] == ["clara_compile_error"]


def test_duplicate_pipeline_name_fails_only_the_later_file(folder: Path) -> None:
    shutil.copy(VALID[0], folder / "a.yaml")
    shutil.copy(VALID[0], folder / "b.yaml")
    bag = bag_of(folder)
    errors = [d for d in bag.dags.values() if "clara-compile-error" in d.tags]
    assert [d.dag_id for d in errors] == ["clara_error__b_yaml"]
    assert "duplicate pipeline name" in errors[0].description
    assert "series-sanity-check" in bag.dags


def test_strict_mode_raises_one_error_listing_every_broken_file(folder: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW__CLARA__STRICT", "True")
    shutil.copy(INVALID[0], folder)
    shutil.copy(INVALID[1], folder)
    bag = bag_of(folder)
    (message,) = bag.import_errors.values()
    assert INVALID[0].name in message and INVALID[1].name in message


def test_parsing_context_builds_only_the_dag_being_run(folder: Path, monkeypatch: Any) -> None:
    for path in VALID:
        shutil.copy(path, folder)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "read-assembly")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "overlap")
    from clara_airflow.loader import load_dags

    namespace: dict[str, Any] = {}
    load_dags(namespace, folder / "clara_pipelines.py")
    assert set(namespace) == {"read-assembly"}


def test_clara_config_section_applies(folder: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW__CLARA__OUTPUT_ROOT", "/srv/clara-out")
    monkeypatch.setenv("AIRFLOW__CLARA__RETRIES", "2")
    shutil.copy(VALID[0], folder)
    shutil.copy(VALID[1], folder)
    (folder / "clara-defaults.yaml").write_text("retries: 1\nresources: {memory: 1024}\n")
    bag = bag_of(folder)
    task = bag.dags["series-sanity-check"].get_task("dicom-validator")
    assert task.options.pipeline.payload.output_root == "/srv/clara-out"
    assert task.retries == 1  # clara-defaults.yaml wins over [clara]
    assert task.mem_limit == "512m"  # the operator's own request wins over every default
    assert bag.dags["ct-denoise-chain"].get_task("series-to-volume").mem_limit == "1024m"


def test_an_unexpected_error_in_one_file_leaves_the_others_loading(folder: Path, monkeypatch: Any) -> None:
    from clara_airflow import loader

    for path in VALID[:2]:
        shutil.copy(path, folder)
    real = loader.compile_pipeline

    def flaky(spec: Any, deployment: Any = None, **kwargs: Any) -> Any:
        if spec.name == "series-sanity-check":
            raise RuntimeError("a bug in clara-airflow")
        return real(spec, deployment, **kwargs)

    monkeypatch.setattr(loader, "compile_pipeline", flaky)
    bag = bag_of(folder)
    assert "ct-denoise-chain" in bag.dags and bag.import_errors == {}
    broken = bag.dags["series-sanity-check"]
    assert "clara-compile-error" in broken.tags and "internal error in clara-airflow (RuntimeError" in broken.doc_md
