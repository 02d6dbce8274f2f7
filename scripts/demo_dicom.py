"""The DICOM demo (``bash scripts/demo.sh --dicom``): a PACS sends a CT study, a pipeline runs, the result
series goes back to the PACS.

Orthanc (Debian's package) plays the hospital PACS, ``clara-airflow dicom listen`` receives, and
``airflow standalone`` runs the demo pipeline with two more operators: the lung mask burnt into a copy
of the series (a DICOM result) and Clara's ``register-results`` (ClaraSCU) sending it back to Orthanc.
Everything lives in .demo/dicom/ and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clara_airflow.dicom.trigger import run_id_for  # noqa: E402
from tests.browser.standalone import free_port, start  # noqa: E402 - the rigs the tests use
from tests.dicom_rig import start_orthanc, start_receiver, stop, wait  # noqa: E402

DAG_ID = "ct-organ-triage-pacs"
EXTRA = """\
- name: mask-to-dicom
  description: The lung mask burnt into a copy of the series, as a new DICOM series of the study.
  container:
    image: clara-airflow/demo-ops
    tag: "0.1"
    command: ["python3", "/opt/clara/ops/mask_to_dicom.py"]
  input:
  - path: /input
  - from: lung-seg
    path: /seg-lung
  output:
  - path: /output
- name: register-dicom-output
  description: Clara's register-results (ClaraSCU) sends the result series to the PACS.
  container:
    image: clara/register-results
    tag: "0.8.1-2108.1"
    command: ["python", "register.py", "--agent", "ClaraSCU", "--data", "[\\"MYPACS\\"]"]
  input:
  - from: mask-to-dicom
    path: /input
"""


def step(text: str) -> None:
    print(f"[demo --dicom] {text}", flush=True)


def pipeline(folder: Path) -> Path:
    """ct-organ-triage with the two DICOM operators, as its own pipeline."""
    text = (REPO / "dags" / "pipelines" / "ct-organ-triage.yaml").read_text()
    text = text.replace("name: ct-organ-triage\n", f"name: {DAG_ID}\n", 1).replace("x-airflow:\n", EXTRA + "x-airflow:\n", 1)
    path = folder / f"{DAG_ID}.yaml"
    path.write_text(text)
    return path


def metrics(port: int, token: str) -> dict[str, float]:
    """The receiver's /metrics samples, by name with labels."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("clara_dicom_")}


def write_config(path: Path, inbox: Path, port: int, airflow_url: str, pacs_port: int, status_port: int = 0) -> None:
    path.write_text(json.dumps({  # JSON is YAML
        "listen": {"host": "127.0.0.1", "port": port, "ae_title": "CLARA", "status_port": status_port or None},
        "inbox": str(inbox), "airflow": {"url": airflow_url},
        "ae_titles": {"CT_AI": {"group_by": "study", "timeout": 3,  # routed by what the study is
                                "rules": [{"when": {"Modality": "CT"}, "pipelines": [DAG_ID]}]}},
        "sources": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "destinations": {"MYPACS": {"host": "127.0.0.1", "port": pacs_port, "ae_title": "ORTHANC"}},
        "min_free_disk_mb": 100}, indent=2))


def run_dicom(env: dict[str, str], payload: Path, began: float) -> int:
    home = REPO / ".demo" / "dicom"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    home.chmod(0o755)
    inbox, port = home / "inbox", free_port()
    inbox.mkdir()
    step("starting Orthanc (the PACS) with its DICOM port and REST API on 127.0.0.1")
    orthanc = start_orthanc(home / "orthanc", {"clara": ["CT_AI", "127.0.0.1", port]})
    config = home / "dicom.yaml"
    processes = []
    try:
        write_config(config, inbox, port, "http://127.0.0.1:1", orthanc.dicom_port)  # Airflow reads destinations
        step("starting airflow standalone (about 30 s)")
        airflow = start(home / "airflow", [pipeline(home)], env, overrides={
            "AIRFLOW__CLARA__PAYLOAD_ROOT": str(inbox), "AIRFLOW__CLARA__DICOM_CONFIG": str(config)})
        processes.append(airflow.stop)
        status_port, token = free_port(), secrets.token_urlsafe(24)
        write_config(config, inbox, port, airflow.url, orthanc.dicom_port, status_port)
        step(f"starting the receiver: clara-airflow dicom listen --config {config} (log: {home / 'receiver.log'}); "
             f"CT_AI routes a study by rule (Modality CT); /metrics on 127.0.0.1:{status_port}")
        receiver = start_receiver(config, {**env, "CLARA_AIRFLOW_USER": "admin", "CLARA_DICOM_STATUS_TOKEN": token,
                                           "CLARA_AIRFLOW_PASSWORD": airflow.password}, home / "receiver.log")
        processes.append(lambda: stop(receiver))
        wait(lambda: _parsed(airflow), 120, f"{DAG_ID} was not parsed; see {airflow.home}")
        wait(lambda: "listening:" in (home / "receiver.log").read_text(), 30, "the receiver did not start")
        before = metrics(status_port, token)
        step(f"uploading the demo CT series ({len(list(payload.glob('*.dcm')))} slices) to Orthanc")
        for path in sorted(payload.glob("*.dcm")):
            orthanc.post("/instances", path.read_bytes())
        (study,) = orthanc.get("/studies")
        uid = orthanc.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        step("Orthanc sends the study to the receiver (POST /modalities/clara/store)")
        sent = time.monotonic()
        orthanc.post("/modalities/clara/store", json.dumps({"Resources": [study]}).encode())
        run_id = run_id_for(DAG_ID, "CT_AI", uid)
        step(f"waiting for DAG run {run_id}")
        run = wait(lambda: (r := _run(airflow, run_id)) and r["state"] in ("success", "failed") and r, 600,
                   f"the run did not finish; see {airflow.home / 'logs'}")
        step(f"run {run['state']} {time.monotonic() - sent:.0f} s after Orthanc started sending")
        routed = [line for line in (home / "receiver.log").read_text().splitlines() if "group complete" in line]
        print("\n" + "\n".join(routed))
        after = metrics(status_port, token)
        print("\nthe receiver's /metrics lines that moved:")
        for name, value in after.items():
            if value != before.get(name, 0.0):
                print(f"  {name} {before.get(name, 0.0):g} -> {value:g}")
        series = [orthanc.get(f"/series/{s}")["MainDicomTags"] for s in orthanc.get(f"/studies/{study}")["Series"]]
        print(f"\nstudy {uid} in Orthanc now has {len(series)} series:")
        for tags in series:
            print(f"  {tags.get('SeriesNumber', '?'):>4}  {tags.get('SeriesDescription', '(no description)')}")
        print(f"\nreceiver log: {home / 'receiver.log'}; Airflow: {airflow.home}; "
              f"demo finished in {time.monotonic() - began:.0f} s")
        ok = run["state"] == "success" and any("CLARA AI" in t.get("SeriesDescription", "") for t in series)
        return 0 if ok else 1
    finally:
        for close in reversed(processes):
            close()
        orthanc.stop()


def _parsed(airflow: object) -> bool:
    return _get(airflow, f"/api/v2/dags/{DAG_ID}") is not None


def _run(airflow: object, run_id: str) -> dict | None:
    return _get(airflow, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")


def _get(airflow: object, path: str) -> dict | None:
    import urllib.error

    try:
        return airflow.api(path)  # type: ignore[attr-defined, no-any-return]
    except urllib.error.HTTPError:
        return None


if __name__ == "__main__":
    sys.exit(run_dicom(dict(os.environ), REPO / ".demo" / "payload" / "chest-ct-001", time.monotonic()))
