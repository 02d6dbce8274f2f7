"""Driver of scripts/mutation.sh: mutmut per risky module on a copy of the checkout, then the scores.

Why mutmut 2.5.1: it mutates one file at a time and runs any test command we give it per module, so
each module is tested only by the tests that cover it, with no plugin inside pytest (mutmut 3 runs
pytest in-process on a trampolined copy of the whole package, which Airflow's import-time setup in
our tests does not survive well, and cosmic-ray needs a session database and a worker setup).
Mutants judged equivalent (they cannot change behaviour) are listed in tests/MUTATION.md, as
``module | the mutated line``, and are left out of the score.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIFECYCLE = "tests/unit/test_lifecycle.py"
MODULES = {
    "services/leases.py": [LIFECYCLE, "tests/unit/test_leases_rules.py"],
    "services/records.py": [LIFECYCLE, "tests/unit/test_heartbeat.py", "tests/unit/test_records_rules.py"],
    "services/admin.py": [LIFECYCLE, "tests/unit/test_admin.py", "tests/unit/test_admin_rules.py"],
    "services/ensure.py": [LIFECYCLE, "tests/unit/operators"],
    "backends/docker.py": ["tests/unit/backends/test_docker_manager_rules.py",
                           "tests/unit/backends/test_docker_manager.py"],
    "backends/layout.py": ["tests/unit/backends/test_payload.py", "tests/unit/backends/test_layout.py",
                           "tests/unit/backends/test_layout_rules.py", "tests/unit/backends/test_docker_steps.py"],
    "compiler/resolve.py": ["tests/unit/compiler", "tests/unit/test_dag.py"],
    "plugin.py": ["tests/test_plugin.py"],
    "loader.py": ["tests/unit/test_loader_rules.py", "tests/unit/test_bad_files.py", "tests/test_example_dags.py"],
    "services/heartbeat.py": ["tests/unit/test_heartbeat.py", LIFECYCLE],
    "services/identity.py": ["tests/unit/test_identity.py", LIFECYCLE],
    "services/reaper.py": ["tests/unit/test_reaper.py", "tests/unit/test_loader_rules.py", "tests/unit/test_admin.py"],
    "services/page.py": ["tests/unit/test_page_rules.py", "tests/unit/test_page.py", "tests/test_plugin.py"],
    "batch/inbox.py": ["tests/unit/test_inbox_rules.py", "tests/unit/test_batch_ledger.py", "tests/unit/test_batch_run.py"],
    "batch/ledger.py": ["tests/unit/test_ledger_rules.py", "tests/unit/test_batch_ledger.py", "tests/unit/test_batch_run.py"],
    "batch/run.py": ["tests/unit/test_batch_run_rules.py", "tests/unit/test_batch_run.py", "tests/unit/test_batch_ledger.py"],
    "priority.py": ["tests/unit/test_priority.py"],
    "dicom/trigger.py": ["tests/unit/dicom/test_trigger_rules.py", "tests/unit/dicom/test_receiver_rules.py"],
    "dicom/groups.py": ["tests/unit/dicom/test_groups_rules.py", "tests/unit/dicom/test_receiver_faults.py"],
    "dicom/export.py": ["tests/unit/dicom/test_export.py"],
    "dicom/status.py": ["tests/unit/dicom/test_status_rules.py", "tests/unit/dicom/test_receiver_rules.py",
                        "tests/unit/dicom/test_routing.py",
                        "tests/unit/dicom/test_trigger_rules.py"],
    "dicom/config.py": ["tests/unit/dicom/test_config_rules.py", "tests/unit/dicom/test_receiver_rules.py",
                        "tests/unit/dicom/test_export_rules.py",
                        "tests/unit/dicom/test_routing.py"],
    "dicom/routing.py": ["tests/unit/dicom/test_routing.py"],
    "dicom/health.py": ["tests/unit/dicom/test_health_rules.py", "tests/unit/dicom/test_health.py"],
    "dicom/reactor.py": ["tests/unit/dicom/test_reactor.py"],
    "dicom/receiver.py": ["tests/unit/dicom/test_receiver_rules.py", "tests/unit/dicom/test_receiver_faults.py",
                          "tests/unit/dicom/test_receiver.py"],
}


def equivalents() -> set[tuple[str, str]]:
    """(module, stripped mutated line) pairs from tests/MUTATION.md's table."""
    found = set()
    for line in (REPO / "tests" / "MUTATION.md").read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|\s*`(.+)`\s*\|", line)
        if match:
            found.add((match.group(1), match.group(2).replace("\\|", "|").strip()))  # Markdown escapes | in tables
    return found


def copy_checkout() -> Path:
    work = Path(tempfile.mkdtemp(prefix="clara-mutation-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    (work / ".venv").symlink_to(REPO / ".venv")
    return work


def mutated_line(work: Path, mutant_id: int) -> str:
    diff = subprocess.run([str(work / ".venv/bin/mutmut"), "show", str(mutant_id)], cwd=work, capture_output=True,
                          text=True).stdout
    return next((line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")),
                "")


RESUMES = 10


def mutmut(work: Path, module: str, runner: str, tmp: Path) -> str:
    """One ``mutmut run`` of ``module``; its output. Killed a few seconds after it prints a traceback (it
    would hang at exit)."""
    process = subprocess.Popen([str(work / ".venv/bin/mutmut"), "run", "--paths-to-mutate", f"clara_airflow/{module}",
                                "--runner", runner, "--no-progress"], cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Traceback"):
            time.sleep(5)
            process.kill()
            break
    process.wait()
    return "".join(lines)


def run_module(work: Path, module: str, tests: list[str], known: set[tuple[str, str]]) -> tuple[int, int, list[str]]:
    cache = work / ".mutmut-cache"
    cache.unlink(missing_ok=True)
    tests = [t for t in tests if (work / t).exists()]  # an older checkout may lack a newer test file
    # mutmut 2.5.1 counts only exit status 1 as "tests failed": a mutant that breaks the import (pytest's
    # collection error, status 2) would count as survived. Any failing status is a kill here.
    pytest = f"{work}/.venv/bin/python -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
    runner = f"sh -c '{pytest} || exit 1'"
    tmp = work / "tmp"  # mutmut kills slow test runs before their teardown: their temp folders stay in here
    tmp.mkdir(exist_ok=True)
    rows: list[tuple[int, str]] = []
    output, untested = "", -1
    for _ in range(RESUMES):
        # mutmut 2.5.1 dies in its cache code on some mutants ("Attribute Mutant.line is required") and then
        # hangs at exit with the mutant applied: restore the module and resume (mutmut skips what it has
        # tested), until a run tests nothing more
        shutil.copy2(REPO / "clara_airflow" / module, work / "clara_airflow" / module)
        output = mutmut(work, module, runner, tmp)
        rows = sqlite3.connect(cache).execute("select id, status from Mutant").fetchall() if cache.exists() else []
        left = sum(status == "untested" for _, status in rows)
        if not rows or left in (0, untested):
            break
        untested = left
    shutil.copy2(REPO / "clara_airflow" / module, work / "clara_airflow" / module)
    if not rows:  # mutmut tests nothing when the unmutated module fails its own tests: never a 100 %
        raise SystemExit(f"{module}: mutmut tested no mutant; the covering tests must pass on their own first "
                         f"({pytest}):\n{output[-3000:]}")
    killed, survivors, equivalent = 0, [], 0
    untestable = []
    for mutant_id, status in rows:
        if status in ("ok_killed", "bad_timeout", "ok_suspicious"):
            killed += 1
            continue
        if status == "untested":  # mutmut cannot run it (see above): named, and left out of the score
            untestable.append(f"  #{mutant_id} not testable by mutmut 2.5.1: {mutated_line(work, mutant_id)}")
            equivalent += 1
            continue
        line = mutated_line(work, mutant_id)
        if (module, line) in known:
            equivalent += 1
        else:
            survivors.append(f"  #{mutant_id} {status}: {line}")
    return killed, len(rows) - equivalent, survivors + untestable


def main(argv: list[str]) -> int:
    # a module ("services/leases.py") or a folder ("batch/") picks those modules
    chosen = {m: t for m, t in MODULES.items() if not argv or any(m == a or m.startswith(a.rstrip("/") + "/")
                                                                  for a in argv)}
    work = copy_checkout()
    known = equivalents()
    total_killed = total = 0
    try:
        for module, tests in chosen.items():
            if not (work / "clara_airflow" / module).is_file():
                print(f"{module:24s} not in this checkout", flush=True)
                continue
            if not any((work / t).exists() for t in tests):
                print(f"{module:24s} no covering test in this checkout: not measured", flush=True)
                continue
            began = time.monotonic()
            killed, counted, survivors = run_module(work, module, tests, known)
            total_killed, total = total_killed + killed, total + counted
            score = 100 * killed / counted if counted else 100.0
            print(f"{module:24s} {killed:4d}/{counted:<4d} killed  {score:5.1f} %  ({time.monotonic() - began:.0f} s)",
                  flush=True)
            for line in survivors:
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"all modules: {total_killed}/{total} killed ({100 * total_killed / max(total, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
