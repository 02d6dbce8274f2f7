"""Runs the ct-organ-triage demo twice with `airflow dags test` and reports what happened.

Uses a throw-away AIRFLOW_HOME in .demo/ and the repository's dags/ folder; outputs go to
[clara] output_root (default /var/lib/clara-airflow/output, override with CLARA_DEMO_OUTPUT).
"""

from __future__ import annotations

import json
import os
import re
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
    env = {**os.environ, "AIRFLOW_HOME": str(DEMO / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CLARA__OUTPUT_ROOT": output_root,
           "AIRFLOW__CLARA__PAYLOAD_ROOT": str(DEMO / "payload"),
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
