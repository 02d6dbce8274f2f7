"""Runs the ct-organ-triage demo twice with `airflow dags test` and reports what happened.

Uses a throw-away AIRFLOW_HOME in .demo/ and the repository's dags/ folder; outputs go to
[clara] output_root (default /var/lib/clara-airflow/output, override with CLARA_DEMO_OUTPUT).

``--dicom``: Orthanc sends the study to the DICOM receiver and gets the result series back (demo_dicom.py).
``--batch``: the same pipeline as a nightly batch (``x-airflow.batch``, in .demo/batch-dags/) over an
inbox of 20 synthetic studies: one run processes all 20 with one service start, a second run finds 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
DAG_ID = "ct-organ-triage"
BIN = REPO / ".venv" / "bin"


def main() -> int:
    output_root = os.environ.get("CLARA_DEMO_OUTPUT", "/var/lib/clara-airflow/output")
    batch = "--batch" in sys.argv[1:]
    env = {**os.environ, "AIRFLOW_HOME": str(DEMO / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CLARA__OUTPUT_ROOT": output_root,
           "AIRFLOW__CLARA__PAYLOAD_ROOT": str(DEMO / "payload"),
           # One deployment identity for this machine's demo and test cluster (scripts/cluster.sh), whatever
           # clone or metadata database they run from: each adopts the demo service an earlier one left on
           # the engine instead of refusing it as another deployment's.
           "AIRFLOW__CLARA__DEPLOYMENT_ID": os.environ.get("AIRFLOW__CLARA__DEPLOYMENT_ID", "clara-local"),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    began = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    step("migrating the Airflow metadata database (SQLite)")
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    payload = DEMO / "payload" / "chest-ct-001"
    if not any(payload.glob("*.dcm")):
        step(f"writing a synthetic chest CT series (DICOM) to {payload}")
        payload.mkdir(parents=True, exist_ok=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{payload}:/out", "clara-airflow/demo-ops:0.1",
                        "python3", "/opt/clara/ops/make_phantom.py", "/out"], check=True, capture_output=True)
    plan = json.loads(subprocess.run([BIN / "clara-airflow", "inspect", str(REPO / "dags/pipelines/ct-organ-triage.yaml"),
                                      "--json"], env=env, check=True, capture_output=True, text=True).stdout)
    sid = plan["services"][0]["id"]
    stopped = subprocess.run([BIN / "clara-airflow", "services", "stop", f"clara-svc-{sid}", "--force"], env=env,
                             capture_output=True, text=True)
    if stopped.returncode == 0 and "stopped" in stopped.stdout:
        step(f"stopped clara-svc-{sid} left by an earlier demo, so run 1 starts it cold")
    if batch:
        return run_batch(env, payload, Path(output_root), began)
    if "--dicom" in sys.argv[1:]:
        from demo_dicom import run_dicom

        return run_dicom(env, payload, began)
    runs = [run_once(n, env, payload) for n in (1, 2)]
    print()
    print(f"{'run':<4} {'state':<8} {'service':<22} {'ensure':>9} {'wall':>7}  outputs")
    for n, r in enumerate(runs, 1):
        folder = Path(output_root) / DAG_ID / re.sub(r"[^A-Za-z0-9._-]", "_", r["run_id"])
        print(f"{n:<4} {r['state']:<8} {r['service']:<22} {r['ensure_s']:>8.3f}s {r['wall_s']:>6.1f}s  {folder}")
    report = Path(output_root) / DAG_ID / re.sub(r"[^A-Za-z0-9._-]", "_", runs[-1]["run_id"]) / "report" / "report.txt"
    if report.is_file():
        print(f"\nreport of run 2 ({report}):\n{report.read_text()}")
    print("shared services (clara-airflow services list):")
    subprocess.run([BIN / "clara-airflow", "services", "list"], env=env, check=False)
    print(f"\ndemo finished in {time.monotonic() - began:.0f} s; Airflow logs and DB are in {DEMO / 'airflow'}")
    ok = all(r["state"] == "success" for r in runs) and runs[0]["service"].startswith("started") \
        and runs[1]["service"].startswith("reused")
    return 0 if ok else 1


BATCH_DAG = "ct-organ-triage-nightly"
STUDIES = 20


def run_batch(env: dict[str, str], payload: Path, output_root: Path, began: float) -> int:
    """The batch demo: the demo pipeline with an x-airflow batch block, 20 studies, two runs."""
    dags, inbox = DEMO / "batch-dags", DEMO / "inbox"
    for folder in (dags, inbox, output_root / BATCH_DAG / ".clara-studies"):  # a fresh inbox and ledger
        shutil.rmtree(folder, ignore_errors=True)
    dags.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "clara_pipelines.py", dags)
    text = (REPO / "dags" / "pipelines" / "ct-organ-triage.yaml").read_text()
    text = text.replace("name: ct-organ-triage\n", f"name: {BATCH_DAG}\n", 1).replace(
        "x-airflow:\n", f'x-airflow:\n  schedule: "0 2 * * *"\n  batch: {{inbox: {inbox}, quiet_seconds: 60}}\n', 1)
    (dags / f"{BATCH_DAG}.yaml").write_text(text)
    step(f"{STUDIES} synthetic studies in {inbox}, each with a .complete marker; pipeline {dags / BATCH_DAG}.yaml")
    for n in range(1, STUDIES + 1):
        shutil.copytree(payload, inbox / f"study-{n:03d}")
        (inbox / f"study-{n:03d}" / ".complete").write_text("")
    env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    rows = []
    for n in (1, 2):
        step(f"batch run {n}: airflow dags test {BATCH_DAG} (no clara_payload: the inbox; log: .demo/batch-{n}.log)")
        start = time.monotonic()
        proc = subprocess.run([BIN / "airflow", "dags", "test", BATCH_DAG], env=env, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        (DEMO / f"batch-{n}.log").write_text(log)
        finished = re.search(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", log)
        run_id, state = (finished.group(1), finished.group(2)) if finished else ("?", "error")
        summary_file = output_root / BATCH_DAG / re.sub(r"[^A-Za-z0-9._-]", "_", run_id) / "batch-summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        starts = len(re.findall(r"service clara-svc-\w+ started in", log))
        reuses = len(re.findall(r"service clara-svc-\w+ reused in", log))
        rows.append((n, state, len(summary.get("studies", [])), summary.get("succeeded", 0), starts, reuses,
                     time.monotonic() - start, summary_file))
        if state != "success":
            print(log[-4000:], file=sys.stderr)
    print()
    print(f"{'run':<4} {'state':<8} {'studies':>7} {'ok':>4} {'service starts':>14} {'reuses':>6} {'wall':>7}  summary")
    for n, state, count, ok, starts, reuses, wall, summary_file in rows:
        print(f"{n:<4} {state:<8} {count:>7} {ok:>4} {starts:>14} {reuses:>6} {wall:>6.1f}s  {summary_file}")
    print(f"\nstudies of {BATCH_DAG} (clara-airflow studies {BATCH_DAG}):")
    listing = subprocess.run([BIN / "clara-airflow", "studies", str(dags / f"{BATCH_DAG}.yaml")], env=env,
                             capture_output=True, text=True)
    print("\n".join(listing.stdout.splitlines()[:6]) + f"\n... ({STUDIES} studies)")
    print(f"\nbatch demo finished in {time.monotonic() - began:.0f} s")
    first, second = rows
    ok = (first[1] == "success" and first[2] == first[3] == STUDIES and first[4] + first[5] == 1
          and second[1] == "success" and second[2] == 0 and second[4] + second[5] == 0)
    return 0 if ok else 1


def step(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run_once(n: int, env: dict[str, str], payload: Path) -> dict:
    step(f"run {n}: airflow dags test {DAG_ID} (log: .demo/run-{n}.log)")
    began = time.monotonic()
    proc = subprocess.run([BIN / "airflow", "dags", "test", DAG_ID, "-c", json.dumps({"clara_payload": str(payload)})],
                          env=env, capture_output=True, text=True)
    wall = time.monotonic() - began
    log = proc.stdout + proc.stderr
    (DEMO / f"run-{n}.log").write_text(log)
    service = re.search(r"service (clara-svc-\w+) (started|reused) in ([0-9.]+) s", log)
    finished = re.search(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", log)
    result = {"run_id": finished.group(1) if finished else "?", "state": finished.group(2) if finished else "error",
              "service": f"{service.group(2)} {service.group(1)[10:]}" if service else "?",
              "ensure_s": float(service.group(3)) if service else float("nan"), "wall_s": wall}
    if result["state"] != "success":
        print(log[-4000:], file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(main())
