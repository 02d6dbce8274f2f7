"""The output layout helpers that need no engine: the step user option and handing folders over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clara_airflow.backends.layout import hand_over, step_user
from clara_airflow.errors import ClaraAirflowError


def test_step_user_values() -> None:
    assert step_user(None) is None
    assert step_user("  ") is None
    assert step_user("1000") == (1000, 1000)
    assert step_user("1000:0") == (1000, 0)
    assert step_user("worker") == (os.getuid(), os.getgid())
    assert step_user("1000:2000", local=False) == (1000, 2000)


@pytest.mark.parametrize("bad", ["root", "1000:", ":1000", "1:2:3", "-1", "worker"])
def test_bad_step_user_names_the_option_and_the_forms(bad: str) -> None:
    local = bad != "worker"
    with pytest.raises(ClaraAirflowError, match=r"\[clara\] step_user"):
        step_user(bad, local=local)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_hand_over_gives_the_whole_fresh_folder_to_the_user(tmp_path: Path) -> None:
    (tmp_path / "step" / "left").mkdir(parents=True)
    hand_over(tmp_path / "step", (4321, 4322))
    for path in (tmp_path / "step", tmp_path / "step" / "left"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert tmp_path.stat().st_uid == 0, "nothing above the step's own folder changes hands"


def test_a_run_claims_its_folder_and_another_run_is_refused(tmp_path: Path) -> None:
    from clara_airflow.backends.layout import claim_run_folder

    folder = claim_run_folder(str(tmp_path), "dag", "manual;1")
    assert (folder / ".clara-run-id").read_text() == "manual;1"
    assert claim_run_folder(str(tmp_path), "dag", "manual;1") == folder, "the same run may come back (retries)"
    (folder / "a" / "result").parent.mkdir()
    (folder / "a" / "result").write_text("first run's output")
    with pytest.raises(ClaraAirflowError, match="belongs to run 'manual;1', not 'manual:1'"):
        claim_run_folder(str(tmp_path), "dag", "manual:1")  # same folder name once unsafe characters become _
    assert (folder / "a" / "result").read_text() == "first run's output"


def test_a_retry_empties_only_its_own_operator_folder(tmp_path: Path) -> None:
    from clara_airflow.backends.layout import reset_step_folder

    (tmp_path / "a" / "old").mkdir(parents=True)
    (tmp_path / "a" / "old" / "half-written").write_text("x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep").write_text("upstream output")
    own = reset_step_folder(tmp_path, "a", ["left", "right"])
    assert sorted(p.name for p in own.iterdir()) == ["left", "right"]
    assert (tmp_path / "b" / "keep").read_text() == "upstream output"
