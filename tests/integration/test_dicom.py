"""The DICOM rig with a real PACS: Orthanc (Debian's package) as the hospital PACS, dcmtk's storescu and
echoscu as a modality, the receiver as its own process, and a real Airflow (standalone) running the
pipelines on Docker. Synthetic CT series come from pydicom."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.uid import generate_uid

from clara_airflow.dicom.trigger import run_id_for
from clara_airflow.priority import BAND
from tests.browser.standalone import Standalone, free_port, start
from tests.conftest import REPO
from tests.dicom_data import ct_series
from tests.dicom_rig import Orthanc, start_orthanc, start_receiver, stop, wait

pytestmark = [pytest.mark.docker, pytest.mark.slow]
FIXTURES = REPO / "tests" / "fixtures" / "dicom"


@dataclass
class Rig:
    home: Path
    airflow: Standalone
    orthanc: Orthanc
    config: Path
    port: int
    receiver: subprocess.Popen[bytes]
    env: dict[str, str]
    status_port: int = 0

    def metrics(self) -> dict[str, float]:
        """The receiver's /metrics samples (name with labels -> value)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.status_port}/metrics",
                                         headers={"Authorization": f"Bearer {self.env['CLARA_DICOM_STATUS_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("clara_dicom_")}

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def log(self) -> Path:
        return self.home / "receiver.log"

    def store(self, files: list[Path], called: str, calling: str = "MODALITY", port: int | None = None
              ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port or self.port),
                               *map(str, files)], capture_output=True, text=True, timeout=60)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        try:
            return self.airflow.api(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def runs(self, dag_id: str) -> list[str]:
        found = self.airflow.api(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
        return [r["dag_run_id"] for r in found["dag_runs"]]

    def finished(self, dag_id: str, run_id: str, seconds: float = 180) -> dict[str, Any]:
        return wait(lambda: (r := self.run(dag_id, run_id)) and r["state"] in ("success", "failed") and r,
                    seconds, f"{run_id} did not finish; see {self.log} and {self.airflow.home / 'logs'}")


def receiver_config(path: Path, *, inbox: Path, port: int, airflow_url: str, orthanc: Orthanc,
                    status_port: int | None = None) -> None:
    path.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port, "ae_title": "CLARA", "status_port": status_port},
        "inbox": str(inbox),
        "airflow": {"url": airflow_url},
        "ae_titles": {
            "STUDY_AI": {"pipelines": ["dicom-roundtrip"], "group_by": "study", "timeout": 5},
            "SERIES_AI": {"pipelines": ["dicom-count"], "group_by": "series", "timeout": 5, "priority": "immediate"},
            "ROUTED_AI": {"group_by": "study", "timeout": 3, "rules": [  # by what a study is (issue 24)
                {"when": {"Modality": "CT"}, "pipelines": ["dicom-count"], "priority": "higher"},
                {"when": {"Modality": "MR"}, "pipelines": ["dicom-count"]}]},
        },
        "sources": [{"ae_title": "MODALITY", "host": "127.0.0.1"}, {"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "destinations": {"MYPACS": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": "ORTHANC"}},
        "reject_unknown_sources": True,
        "min_free_disk_mb": 100,
    }))


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    home = Path(tempfile.mkdtemp(prefix="clara-dicom-"))
    home.chmod(0o755)  # step containers (not root) read the received studies
    port = free_port()
    orthanc = start_orthanc(home / "orthanc", {"clara": ["STUDY_AI", "127.0.0.1", port],
                                               "routed": ["ROUTED_AI", "127.0.0.1", port]})
    config = home / "dicom.yaml"
    receiver_config(config, inbox=home / "inbox", port=port, airflow_url="http://127.0.0.1:1", orthanc=orthanc)
    (home / "inbox").mkdir()
    airflow = start(home / "airflow", [FIXTURES / "dicom-roundtrip.yaml", FIXTURES / "dicom-count.yaml"],
                    dict(os.environ), overrides={"AIRFLOW__CLARA__PAYLOAD_ROOT": str(home / "inbox"),
                                                 "AIRFLOW__CLARA__DICOM_CONFIG": str(config)})
    status_port = free_port()
    receiver_config(config, inbox=home / "inbox", port=port, airflow_url=airflow.url, orthanc=orthanc,
                    status_port=status_port)
    env = {**os.environ, "CLARA_AIRFLOW_USER": "admin", "CLARA_AIRFLOW_PASSWORD": airflow.password,
           "CLARA_DICOM_STATUS_TOKEN": secrets.token_urlsafe(24)}
    receiver = start_receiver(config, env, home / "receiver.log")
    rig = Rig(home, airflow, orthanc, config, port, receiver, env, status_port)
    try:
        for dag_id in ("dicom-roundtrip", "dicom-count"):
            wait(lambda d=dag_id: _parsed(airflow, d), 90, f"{dag_id} was not parsed; see {airflow.home}")
        wait(lambda: "listening:" in rig.log.read_text(), 30, f"the receiver did not start; see {rig.log}")
        yield rig
    finally:
        stop(rig.receiver)
        airflow.stop()
        orthanc.stop()
        artifacts = REPO / "artifacts" / "dicom"
        artifacts.mkdir(parents=True, exist_ok=True)
        for log in (rig.log, home / "orthanc" / "orthanc.log", airflow.home / "standalone.log"):
            if log.exists():
                shutil.copy(log, artifacts / log.name)
        shutil.rmtree(home, ignore_errors=True)


def _parsed(airflow: Standalone, dag_id: str) -> bool:
    try:
        return bool(airflow.api(f"/api/v2/dags/{dag_id}"))
    except urllib.error.HTTPError:
        return False


def test_echoscu_gets_an_answer(rig: Rig) -> None:
    echo = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "CLARA", "127.0.0.1", str(rig.port)],
                          capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, echo.stderr


def test_a_study_from_a_modality_runs_once_and_its_results_reach_the_pacs(rig: Rig) -> None:
    study = generate_uid()
    files = ct_series(rig.home / "send" / study, study=study, series=generate_uid(), count=3)
    sent = rig.store(files, "STUDY_AI")
    assert sent.returncode == 0, sent.stderr
    run_id = run_id_for("dicom-roundtrip", "STUDY_AI", study)
    run = rig.finished("dicom-roundtrip", run_id)
    assert run["state"] == "success", rig.airflow.home / "logs"
    folder = rig.inbox / "STUDY_AI" / study
    assert run["conf"] == {"clara_payload": str(folder), "clara_priority": "normal"}
    assert (folder / ".complete").is_file() and len(list(folder.glob("*.dcm"))) == 3
    found = rig.orthanc.find_study(study)
    assert found, "register-results did not put the study into Orthanc"
    assert len(rig.orthanc.get(f"/studies/{found[0]['ID']}/instances")) == 3
    assert [r for r in rig.runs("dicom-roundtrip") if study in r] == [run_id]
    tasks = rig.airflow.api(f"/api/v2/dags/dicom-roundtrip/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert {t["task_id"]: t["state"] for t in tasks} == {
        "copy-series": "success", "register-dicom-output": "success",
        "register-volume-images-for-rendering": "skipped"}, "the renderserver agent is skipped, the run succeeds"


def test_dicom_status_after_a_bad_day(rig: Rig) -> None:
    """A pipeline name typo (Airflow answers 404), an AE title removed from the config while a study was
    still gathering, and Airflow unreachable: the receiver lives through it and `dicom status` says so."""
    home, port = rig.home / "bad-day", free_port()
    home.mkdir()
    config, inbox = home / "dicom.yaml", rig.inbox / "bad-day"
    receiver_config(config, inbox=inbox, port=port, airflow_url=rig.airflow.url, orthanc=rig.orthanc)
    data = yaml.safe_load(config.read_text())
    data["ae_titles"]["TYPO_AI"] = {"pipelines": ["dicom-rondtrip"], "timeout": 1}
    data["ae_titles"]["OLD_AI"] = {"pipelines": ["dicom-roundtrip"], "timeout": 3600}
    config.write_text(yaml.safe_dump(data))
    receiver = start_receiver(config, rig.env, home / "receiver.log")
    typo, old = generate_uid(), generate_uid()
    try:
        wait(lambda: "listening:" in (home / "receiver.log").read_text(), 30, "the receiver did not start")
        assert "routed DAG dicom-rondtrip does not exist in Airflow" in (home / "receiver.log").read_text()
        assert rig.store(ct_series(home / "a", study=typo, series=generate_uid(), count=1), "TYPO_AI",
                         port=port).returncode == 0
        assert rig.store(ct_series(home / "b", study=old, series=generate_uid(), count=2), "OLD_AI",
                         port=port).returncode == 0
        wait(lambda: list((inbox / ".clara-receiver" / "failed-triggers").glob("*.json")), 30, "no failed trigger")
    finally:
        stop(receiver, 9)
    del data["ae_titles"]["OLD_AI"]  # the config changes while OLD_AI's study is still gathering
    data["airflow"]["url"] = "http://127.0.0.1:1"  # and Airflow is unreachable
    data["ae_titles"]["SERIES_AI"]["timeout"] = 1
    config.write_text(yaml.safe_dump(data))
    receiver = start_receiver(config, rig.env, home / "receiver.log")

    def status_now() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "clara-airflow"), "dicom", "status", "--config",
                               str(config), "--json"], capture_output=True, text=True, timeout=60, env=rig.env)

    waiting = generate_uid()
    try:
        wait(lambda: "no longer in ae_titles" in (home / "receiver.log").read_text(), 30, "not quarantined")
        # a series received while Airflow is down: its run waits in the spool, tried again and again
        assert rig.store(ct_series(home / "c", study=generate_uid(), series=waiting, count=1), "SERIES_AI",
                         port=port).returncode == 0
        found = wait(lambda: (f := status_now()).returncode == 0 and any(
            t["attempts"] >= 1 for t in json.loads(f.stdout)["triggers"]["pending"]) and f, 60,
                     "the series' trigger was never tried")
        assert receiver.poll() is None, "the receiver is alive"
    finally:
        stop(receiver)
    (REPO / "artifacts" / "dicom").mkdir(parents=True, exist_ok=True)
    (REPO / "artifacts" / "dicom" / "status-bad-day.json").write_text(found.stdout)
    status = json.loads(found.stdout)
    assert [(g["ae_title"], g["uid"], g["instances"], g["state"]) for g in status["groups"]] == [
        ("OLD_AI", old, 2, "quarantined")]
    (failed,) = status["triggers"]["failed"]
    assert failed["pipeline"] == "dicom-rondtrip" and failed["reason"].startswith("HTTP 404: ")
    assert failed["run_id"] == run_id_for("dicom-rondtrip", "TYPO_AI", typo)
    assert status["dags"]["dicom-rondtrip"].startswith("unknown: ") and status["disk"]["free_mb"] > 0
    (pending,) = status["triggers"]["pending"]
    assert (pending["pipeline"], pending["run_id"]) == ("dicom-count", run_id_for("dicom-count", "SERIES_AI", waiting,
                                                                                  "immediate"))
    assert "Connection refused" in pending["last_error"], pending


def test_grouping_by_quiet_time_study_and_series(rig: Rig) -> None:
    close, apart = generate_uid(), generate_uid()
    close_series = [ct_series(rig.home / "g" / f"c{n}", study=close, series=generate_uid(), count=1) for n in range(3)]
    apart_ids = [generate_uid() for _ in range(3)]
    apart_series = [ct_series(rig.home / "g" / f"a{n}", study=apart, series=s, count=1) for n, s in enumerate(apart_ids)]
    # one association per series: the close study's 3 s apart, the other's 7 s apart (timeout 5 s)
    plan = sorted([(3.0 * n, "close", n) for n in range(3)] + [(7.0 * n, "apart", n) for n in range(3)])
    began = time.monotonic()
    for at, which, n in plan:
        time.sleep(max(0.0, began + at - time.monotonic()))
        if which == "close":
            assert rig.store(close_series[n], "STUDY_AI").returncode == 0
        else:
            assert rig.store(apart_series[n], "STUDY_AI").returncode == 0
            assert rig.store(apart_series[n], "SERIES_AI").returncode == 0
    time.sleep(8)  # the last groups complete
    assert [r for r in rig.runs("dicom-roundtrip") if close in r] == [run_id_for("dicom-roundtrip", "STUDY_AI", close)]
    assert len(list((rig.inbox / "STUDY_AI" / close).glob("*.dcm"))) == 3, "three series, one study, one run"
    assert [r for r in rig.runs("dicom-roundtrip") if apart in r] == [run_id_for("dicom-roundtrip", "STUDY_AI", apart)], \
        "grouped by study, a study is never processed twice"
    assert list((rig.inbox / "_late" / "STUDY_AI" / apart).glob("*/*.dcm")), "late series are kept"
    by_series = sorted(r for r in rig.runs("dicom-count") if any(s in r for s in apart_ids))
    assert by_series == sorted(run_id_for("dicom-count", "SERIES_AI", s, "immediate") for s in apart_ids)
    run = rig.finished("dicom-count", by_series[0])
    tis = rig.airflow.api(f"/api/v2/dags/dicom-count/dagRuns/{by_series[0]}/taskInstances")["task_instances"]
    assert run["state"] == "success" and tis, run
    assert all(BAND * 3 < t["priority_weight"] < BAND * 4 for t in tis), "an immediate run's tasks weigh in its band"


def test_an_unknown_calling_ae_is_refused(rig: Rig) -> None:
    files = ct_series(rig.home / "stranger", study=generate_uid(), series=generate_uid(), count=1)
    sent = rig.store(files, "STUDY_AI", calling="STRANGER")
    assert sent.returncode != 0
    assert "association refused: calling=STRANGER host=127.0.0.1 called=STUDY_AI" in rig.log.read_text()


def test_orthanc_sends_a_study_to_the_receiver(rig: Rig) -> None:
    study = generate_uid()
    for path in ct_series(rig.home / "pacs" / study, study=study, series=generate_uid(), count=2):
        rig.orthanc.post("/instances", path.read_bytes())
    (found,) = rig.orthanc.find_study(study)
    rig.orthanc.post("/modalities/clara/store", json.dumps({"Resources": [found["ID"]]}).encode())
    assert rig.finished("dicom-roundtrip", run_id_for("dicom-roundtrip", "STUDY_AI", study))["state"] == "success"


def test_orthanc_sends_ct_mr_and_us_to_one_ae_title_and_the_rules_start_ct_and_mr(rig: Rig) -> None:
    before = rig.metrics()
    studies = {modality: generate_uid() for modality in ("CT", "MR", "US")}
    for modality, study in studies.items():
        for path in ct_series(rig.home / "routed" / modality, study=study, series=generate_uid(), count=2,
                              modality=modality):
            rig.orthanc.post("/instances", path.read_bytes())
        (found,) = rig.orthanc.find_study(study)
        rig.orthanc.post("/modalities/routed/store", json.dumps({"Resources": [found["ID"]]}).encode())
    expected = [run_id_for("dicom-count", "ROUTED_AI", studies["CT"], "higher"),
                run_id_for("dicom-count", "ROUTED_AI", studies["MR"])]
    runs = {run_id: rig.finished("dicom-count", run_id)["state"] for run_id in expected}
    unrouted = wait(lambda: [line for line in rig.log.read_text().splitlines() if "matches no rule" in line], 30,
                    "the US study was not reported as unrouted")
    status = subprocess.run([str(Path(sys.executable).parent / "clara-airflow"), "dicom", "status", "--config",
                             str(rig.config), "--json", "--offline"], capture_output=True, text=True, timeout=60)
    groups = [g for g in json.loads(status.stdout)["groups"] if g["ae_title"] == "ROUTED_AI"]
    started = sorted(r for r in rig.runs("dicom-count") if any(s in r for s in studies.values()))
    completed = [line for line in rig.log.read_text().splitlines() if "group complete: called=ROUTED_AI" in line]
    (REPO / "artifacts" / "dicom").mkdir(parents=True, exist_ok=True)
    (REPO / "artifacts" / "dicom" / "routing.json").write_text(json.dumps(
        {"studies": studies, "runs started": started, "run states": runs, "receiver log": completed + unrouted,
         "dicom status groups": groups}, indent=1))
    assert started == sorted(expected) and set(runs.values()) == {"success"}, runs
    assert [(g["uid"], g["state"], g["instances"]) for g in groups] == [(studies["US"], "unrouted", 2)]
    assert len(unrouted) == 1 and studies["US"] in unrouted[0]
    assert all("routing_ms=" in line for line in completed) and len(completed) == 2
    after = rig.metrics()
    moved = {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name, 0.0)}
    (REPO / "artifacts" / "dicom" / "routing-metrics.json").write_text(json.dumps(moved, indent=1))
    assert moved["clara_dicom_instances_stored_total"] == 6 and moved["clara_dicom_groups_unrouted_total"] == 1
    assert moved["clara_dicom_groups_routed_total"] == moved["clara_dicom_groups_completed_total"] == 2
    assert moved["clara_dicom_triggers_sent_total"] == 2 and moved["clara_dicom_bytes_received_total"] > 0


def test_a_receiver_killed_with_a_pending_trigger_starts_the_run_once(rig: Rig) -> None:
    """A second receiver whose Airflow is unreachable keeps the trigger on disk; killed (-9) and
    restarted with the right address, it starts the run, once."""
    home, port = rig.home / "second", free_port()
    home.mkdir()
    config = home / "dicom.yaml"
    inbox = rig.inbox / "second"  # a receiver of its own (inside the payload root)
    receiver_config(config, inbox=inbox, port=port, airflow_url="http://127.0.0.1:1", orthanc=rig.orthanc)
    down = start_receiver(config, rig.env, home / "receiver.log")
    study = generate_uid()
    try:
        wait(lambda: "listening:" in (home / "receiver.log").read_text(), 30, "second receiver did not start")
        files = ct_series(home / "send", study=study, series=generate_uid(), count=1)
        assert rig.store(files, "STUDY_AI", port=port).returncode == 0
        pending = inbox / ".clara-receiver" / "pending"
        wait(lambda: "cannot start" in (home / "receiver.log").read_text(), 30, "no failed attempt was logged")
        assert len(list(pending.glob("*.json"))) == 1
    finally:
        stop(down, 9)
    receiver_config(config, inbox=inbox, port=port, airflow_url=rig.airflow.url, orthanc=rig.orthanc)
    again = start_receiver(config, rig.env, home / "receiver.log")
    try:
        run_id = run_id_for("dicom-roundtrip", "STUDY_AI", study)
        assert rig.finished("dicom-roundtrip", run_id)["state"] == "success"
        assert [r for r in rig.runs("dicom-roundtrip") if study in r] == [run_id]
        assert not list(pending.glob("*.json"))
    finally:
        stop(again)
