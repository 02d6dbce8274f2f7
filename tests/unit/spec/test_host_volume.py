"""hostVolumePath (NVIDIA's lung-lesion reference pipeline): a host folder mounted read-only at the same
path in the service container; with a warning; on Kubernetes only with allow_host_paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from clara_airflow.compiler.compiler import compile_pipeline
from clara_airflow.errors import SpecError
from clara_airflow.spec.load import load_pipeline

LUNG = """\
api-version: 0.4.0
name: lung-lesion
operators:
- name: segment
  container: {image: clara/ai-lung, tag: "0.7"}
  services:
  - name: trtis
    container:
      image: nvcr.io/nvidia/tensorrtserver
      tag: 19.08-py3
      command: ["trtserver", "--model-store=/clara/common/models/"]
      hostVolumePath: /clara/common/models/
    connections:
      http: [{name: NVIDIA_CLARA_TRTISURI, port: 8000}]
"""


def test_the_reference_pipeline_loads_with_a_positioned_warning(tmp_path: Path) -> None:
    path = tmp_path / "lung.yaml"
    path.write_text(LUNG)
    spec = load_pipeline(path)
    (warning,) = spec.warnings
    assert str(warning).startswith(f"{path}:12:23: warning: hostVolumePath of service 'trtis'")
    (svc,) = compile_pipeline(spec).services
    assert svc.host_mounts == (("/clara/common/models", "/clara/common/models"),)


def test_on_kubernetes_it_needs_allow_host_paths(tmp_path: Path) -> None:
    path = tmp_path / "lung.yaml"
    path.write_text(LUNG)
    with pytest.raises(SpecError, match=r"lung.yaml:12:23: hostVolumePath /clara/common/models needs a hostPath"):
        compile_pipeline(load_pipeline(path), {"backend": "kubernetes", "payload.claim": "clara-data"})
    (svc,) = compile_pipeline(load_pipeline(path), {"backend": "kubernetes", "allow_host_paths": True}).services
    assert svc.host_mounts


@pytest.mark.parametrize("bad", ["relative/models", "/a/../etc"])
def test_a_bad_host_path_is_an_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "lung.yaml"
    path.write_text(LUNG.replace("hostVolumePath: /clara/common/models/", f"hostVolumePath: {bad}"))
    with pytest.raises(SpecError, match="must be an absolute path without '..'"):
        load_pipeline(path)


def test_operators_may_not_use_it(tmp_path: Path) -> None:
    path = tmp_path / "lung.yaml"
    path.write_text(LUNG.replace('container: {image: clara/ai-lung, tag: "0.7"}',
                                 'container: {image: clara/ai-lung, tag: "0.7", hostVolumePath: /x}'))
    with pytest.raises(SpecError, match="unknown key 'hostVolumePath'"):
        load_pipeline(path)
