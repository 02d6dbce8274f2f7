"""Driver of scripts/mutation.sh: every mutmut mutant of each risky module, against the tests that cover it.

Why mutmut 2.5.1: it mutates one file at a time with a fixed, well-known set of operators, and here it
only makes the mutants (``list_mutations``/``mutate``); this script tests them. Each mutant is written
into one of ``--jobs`` copies of the checkout (the working tree is never mutated) and the module's
covering tests run there, several mutants at a time: those tests mostly wait on sockets and timers, so
a module like dicom/receiver.py (253 mutants, 40 s of tests each) takes about 40 minutes instead of
3 hours. A time-out (3x the unmutated run, at least 60 s) counts as a kill, as in mutmut. When mutants
run side by side, a kill counts only if the tests fail a second time: load can never make a mutant look
killed. Mutants judged equivalent (they cannot change behaviour) are listed in tests/MUTATION.md, as
``module | the mutated line``, and are left out of the score. Every mutant's result goes to stderr,
with the first failing test of each kill.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mutants import PYTEST, copy_checkout  # scripts/ is on sys.path: this file runs as a script

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
    "dicom/groups.py": ["tests/unit/dicom/test_groups_rules.py", "tests/unit/dicom/test_receiver_faults.py",
                        "tests/unit/dicom/test_receiver_rules.py", "tests/unit/dicom/test_routing.py",
                        "tests/unit/dicom/test_status_rules.py"],
    "dicom/export.py": ["tests/unit/dicom/test_export.py"],
    "dicom/status.py": ["tests/unit/dicom/test_status_rules.py", "tests/unit/dicom/test_receiver_rules.py",
                        "tests/unit/dicom/test_routing.py",
                        "tests/unit/dicom/test_trigger_rules.py"],
    "dicom/config.py": ["tests/unit/dicom/test_config_rules.py", "tests/unit/dicom/test_receiver_rules.py",
                        "tests/unit/dicom/test_export_rules.py",
                        "tests/unit/dicom/test_routing.py"],
    "dicom/routing.py": ["tests/unit/dicom/test_routing.py", "tests/unit/dicom/test_receiver_rules.py"],
    "dicom/health.py": ["tests/unit/dicom/test_health_rules.py", "tests/unit/dicom/test_health.py"],
    "dicom/reactor.py": ["tests/unit/dicom/test_reactor.py"],
    "dicom/receiver.py": ["tests/unit/dicom/test_receiver_rules.py", "tests/unit/dicom/test_receiver_faults.py",
                          "tests/unit/dicom/test_receiver.py", "tests/unit/dicom/test_health.py",
                          "tests/unit/dicom/test_routing.py"],
}


def equivalents() -> set[tuple[str, str]]:
    """(module, stripped mutated line) pairs from tests/MUTATION.md's table."""
    found = set()
    for line in (REPO / "tests" / "MUTATION.md").read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|\s*`(.+)`\s*\|", line)
        if match:
            found.add((match.group(1), match.group(2).replace("\\|", "|").strip()))  # Markdown escapes | in tables
    return found


def mutants_of(source: str, filename: str) -> list[tuple[int, str, str]]:
    """Every mutant mutmut 2.5.1 makes of ``source``: (line number, the mutated line, the mutated source)."""
    from mutmut import Context, list_mutations, mutate

    found = []
    for mutation_id in list_mutations(Context(source=source, filename=filename)):
        mutated, _ = mutate(Context(source=source, mutation_id=mutation_id, filename=filename))
        line = mutated.split("\n")[mutation_id.line_number] if mutated.count("\n") == source.count("\n") else ""
        found.append((mutation_id.line_number + 1, line.strip(), mutated))
    return found


def failed_test(output: str) -> str:
    """The first failing test's name in pytest's -q output (what killed a mutant), for the log."""
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else output.strip().splitlines()[-1][:120] if output.strip() else "no output"


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[bool, str]:
    """(failed, why) for the covering tests in the checkout at ``root``; a time-out is a failure, as in mutmut."""
    env = {**os.environ, "PYTHONPATH": str(root), "TMPDIR": str(root / "tmp")}  # the copy's package
    (root / "tmp").mkdir(exist_ok=True)  # a test killed at its time-out leaves its temp folders in here
    try:
        result = subprocess.run([*PYTEST, *tests], cwd=root, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, f"timed out after {timeout:.0f} s"
    return result.returncode != 0, failed_test(result.stdout + result.stderr)


def run_module(copies: queue.Queue[Path], module: str, tests: list[str], known: set[tuple[str, str]],
               jobs: int) -> tuple[int, int, list[str]]:
    """(killed, counted, survivors) for one module; mutants are tested ``jobs`` at a time, one per copy."""
    root = copies.get()
    try:
        tests = [t for t in tests if (root / t).exists()]  # an older checkout may lack a newer test file
        began = time.monotonic()
        failed, why = run_tests(root, tests, 1800)
    finally:
        copies.put(root)
    if failed:  # a module whose tests fail unmutated would score 100 %: refused
        raise SystemExit(f"{module}: its covering tests fail with no mutant ({why}); they must pass first")
    timeout = max(60.0, 3 * (time.monotonic() - began))
    source = (REPO / "clara_airflow" / module).read_text()
    mutants = mutants_of(source, f"clara_airflow/{module}")

    def one(mutant: tuple[int, str, str]) -> tuple[bool, str]:
        number, line, mutated = mutant
        if (module, line) in known:
            return False, "equivalent"
        root = copies.get()
        path = root / "clara_airflow" / module
        try:
            path.write_text(mutated)
            failed, why = run_tests(root, tests, timeout)
            if failed and jobs > 1:  # a kill under load must repeat: a spurious failure never counts
                failed, why = run_tests(root, tests, timeout)
        finally:
            path.write_text(source)
            copies.put(root)
        return failed, why

    killed, counted, survivors = 0, 0, []
    with ThreadPoolExecutor(jobs) as pool:
        for (number, line, _), (failed, why) in zip(mutants, pool.map(one, mutants), strict=True):
            if why == "equivalent":
                continue
            counted += 1
            killed += failed
            print(f"    {'killed  ' if failed else 'SURVIVED'} line {number}: {line}"
                  + (f"  [{why}]" if failed else ""), file=sys.stderr, flush=True)
            if not failed:
                survivors.append(f"  line {number} survived: {line}")
    return killed, counted, survivors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help='a module ("services/leases.py") or a folder ("batch/")')
    parser.add_argument("--jobs", type=int, default=4,
                        help="mutants tested at once, each in its own copy of the checkout (default 4: the "
                             "covering tests mostly wait on sockets and timers)")
    args = parser.parse_args(argv)
    chosen = {m: t for m, t in MODULES.items() if not args.modules
              or any(m == a or m.startswith(a.rstrip("/") + "/") for a in args.modules)}
    jobs = max(1, args.jobs)
    copies: queue.Queue[Path] = queue.Queue()
    for _ in range(jobs):
        copies.put(copy_checkout())
    work = copies.queue[0]
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
            killed, counted, survivors = run_module(copies, module, tests, known, jobs)
            total_killed, total = total_killed + killed, total + counted
            score = 100 * killed / counted if counted else 100.0
            print(f"{module:24s} {killed:4d}/{counted:<4d} killed  {score:5.1f} %  ({time.monotonic() - began:.0f} s)",
                  flush=True)
            for line in survivors:
                print(line, flush=True)
    finally:
        while not copies.empty():
            shutil.rmtree(copies.get(), ignore_errors=True)
    print(f"all modules: {total_killed}/{total} killed ({100 * total_killed / max(total, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
