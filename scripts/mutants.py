"""A fixed sample of mutants of the risky paths, for CI: each must be killed by the tests named with it.

Each mutant is one planted bug: an exact piece of source and its replacement. The script applies one,
runs the named tests, and restores the file whatever happens. A mutant whose source text is gone is
an error ("update this list"), never a silent pass. The whole mutation pass, with mutmut, is
``scripts/mutation.sh``; this sample keeps CI within its time.

Usage: ``.venv/bin/python scripts/mutants.py [--only N ...] [--jobs N] [--docker yes|no|only]``. Exit 1 if
any mutant survives. ``--docker no`` leaves out the mutants whose tests use the Docker engine and
``--docker only`` tests just those: scripts/test.sh runs the first part beside the Docker tests.
Two mutants are tested at once by default. Each is tested in its own copy of the checkout, also with
``--jobs 1``: the working tree is never mutated, so other tests can run from it meanwhile (scripts/test.sh
does). A spurious failure under load could only count a mutant killed, never let one survive, and the
mutants whose tests use the Docker engine run one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=-p no:kmock"]


@dataclass(frozen=True)
class Mutant:
    module: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    what: str


LIFECYCLE = "tests/unit/test_lifecycle.py"
MUTANTS = [
    Mutant("clara_airflow/backends/docker.py", "if exc.status_code == 409:\n                log.info",
           "if exc.status_code == 4090:\n                log.info", ("tests/unit/backends/test_docker_manager.py",),
           "the Docker start lock raises on HTTP 409 instead of reusing the winner's container"),
    Mutant("clara_airflow/compiler/resolve.py", "svc, id=service_id(image, tag, command),", "svc, id=svc.id,",
           ("tests/unit/compiler/test_compiler.py",), "the service id is not recomputed after substitution"),
    Mutant("clara_airflow/services/leases.py", 'f"{dag_id}\\0{run_id}"', 'f"{run_id}"', (LIFECYCLE,),
           "the lease key ignores the DAG id"),
    Mutant("clara_airflow/services/admin.py", "    if idle < ttl:\n", "    if False:\n", (LIFECYCLE,),
           "the reaper's idle-TTL check is removed"),
    Mutant("clara_airflow/services/admin.py", "if holders and not force:", "if False:", (LIFECYCLE,),
           "services stop no longer refuses a held service"),
    Mutant("clara_airflow/backends/layout.py", "if owner != run_id:", "if False:",
           ("tests/unit/backends/test_layout.py",), "the run-folder claim no longer refuses another run's folder"),
    Mutant("clara_airflow/backends/layout.py", "if not _inside(real, root):", "if False:",
           ("tests/unit/backends/test_payload.py",), "the payload_root check is disabled"),
    Mutant("clara_airflow/plugin.py", 'can_stop = [Depends(requires_access_variable("DELETE"))]',
           'can_stop = [Depends(requires_access_variable("GET"))]', ("tests/test_plugin.py",),
           "the stop route checks the read permission instead of the stop permission"),
    Mutant("clara_airflow/loader.py", "except Exception as exc:  # an unexpected failure",
           "except KeyError as exc:  # an unexpected failure", ("tests/test_example_dags.py",),
           "the loader's catch-all for unexpected errors is narrowed"),
    Mutant("clara_airflow/backends/layout.py", "    if own.exists():\n        shutil.rmtree(own)",
           "    if False:\n        shutil.rmtree(own)", ("tests/unit/backends/test_layout.py",),
           "a retry no longer empties its own output folder"),
    Mutant("clara_airflow/backends/docker_steps.py", '"bind", m.read_only)', '"bind", False)',
           ("tests/integration/test_docker.py::test_inputs_are_mounted_read_only",),
           "every Docker bind mount is writable"),
    Mutant("clara_airflow/services/admin.py", "            if sid in recorded:\n                continue",
           "            if True:\n                continue", (LIFECYCLE,),
           "orphans are never listed"),
    Mutant("clara_airflow/cli.py", "        if other != path:\n            print(",
           "        if True:\n            print(", ("tests/unit/test_cli.py",),
           "validate reports the first of two duplicate files too"),
    Mutant("clara_airflow/airflow_compat.py", 'ENDED_STATES = ("success", "failed", GONE)',
           'ENDED_STATES = ("success", "failed", GONE, UNKNOWN)', (LIFECYCLE,),
           "an unreadable run state releases a lease"),
    Mutant("clara_airflow/services/ensure.py", "    wait_while_stopping(svc.id, store, deadline=deadline, log=log)\n",
           "", (LIFECYCLE,), "an ensure does not wait out a stop under way"),
    Mutant("clara_airflow/compiler/resolve.py", "        if bad:\n", "        if False:\n",
           ("tests/unit/compiler/test_compiler.py",), "shell characters reach sh -c"),
    Mutant("clara_airflow/compiler/compiler.py", 'if "enum" not in found.get(name, {}) and name in declared:',
           "if False:", ("tests/unit/compiler/test_compiler.py",), "a parameter may choose any image"),
    Mutant("clara_airflow/backends/layout.py", "if stat.S_ISSOCK(mode):", "if False:",
           ("tests/unit/backends/test_payload.py",), "a payload may hold a socket"),
    Mutant("clara_airflow/services/admin.py", "if age <= start_timeout or live_leases(sid, store):",
           "if live_leases(sid, store):", (LIFECYCLE,), "a starting service is removed as an orphan"),
    Mutant("clara_airflow/services/records.py", "store.set(use_key(svc.id, dag_id),",
           'store.set(use_key(svc.id, ""),', (LIFECYCLE,), "pipelines share one use key (lost updates)"),
    Mutant("clara_airflow/batch/ledger.py", "                if run_state(entry.run_id) in LIVE_STATES:\n                    return False",
           "                if run_state(entry.run_id) in LIVE_STATES:\n                    pass",
           ("tests/unit/test_batch_run.py", "tests/unit/test_batch_ledger.py"),
           "a study held by a live run is taken by an overlapping run too"),
    Mutant("clara_airflow/durable.py", "        os.link(temp, target)\n", "        os.replace(temp, target)\n",
           ("tests/unit/test_batch_ledger.py",),
           "the ledger's compare-and-set (a hard link) becomes a plain overwrite"),
    Mutant("clara_airflow/batch/run.py", "if len(found) == expected and all(",
           "if all(", ("tests/unit/test_batch_run.py",), "a branch whose steps never ran counts as a success"),
    Mutant("clara_airflow/operators/docker_step.py", "            run_dir = study_folder(run_dir, study)\n",
           "", ("tests/integration/test_batch.py",), "batch studies write into the run folder, not their own"),
    Mutant("clara_airflow/dicom/trigger.py", "if status in (200, 201, 409):", "if status in (200, 201):",
           ("tests/unit/dicom/test_receiver.py",), "a 409 (the run exists) is retried forever instead of settled"),
    Mutant("clara_airflow/dicom/receiver.py", "self._close(event.assoc, keep=False)", "self._close(event.assoc, keep=True)",
           ("tests/unit/dicom/test_receiver.py",), "an aborted association's instances are kept and processed"),
    Mutant("clara_airflow/dicom/receiver.py", "        if (self.inbox / called / group).exists():  # the group was complete",
           "        if False:  # the group was complete", ("tests/unit/dicom/test_receiver.py",),
           "late instances of a complete study are merged into it (processed twice)"),
    # issue 26: the DICOM receiver and export on a bad day
    Mutant("clara_airflow/dicom/trigger.py", "PERMANENT = (400, 403, 404, 422)", "PERMANENT = (400, 403, 422)",
           ("tests/unit/dicom/test_trigger_rules.py",), "a 404 (a pipeline name typo) is retried forever, never reported"),
    Mutant("clara_airflow/dicom/trigger.py", "        except Exception as exc:\n            status, text = 0,",
           "        except (OSError, ValueError) as exc:\n            status, text = 0,",
           ("tests/unit/dicom/test_trigger_rules.py",), "a non-HTTP answer from Airflow kills the trigger sender"),
    Mutant("clara_airflow/dicom/trigger.py", "min(MAX_BACKOFF, state.delay * 2)", "state.delay * 2",
           ("tests/unit/dicom/test_trigger_rules.py",), "the back-off grows without its 60 s cap"),
    Mutant("clara_airflow/dicom/groups.py", "        runs = add_triggers(target)\n", "",
           ("tests/unit/dicom/test_receiver_faults.py",),
           "the group becomes visible before its triggers are on disk (a crash loses the run)"),
    Mutant("clara_airflow/dicom/groups.py", "                if called.name in routed:", "                if True:",
           ("tests/unit/dicom/test_receiver_faults.py",), "a removed AE title's group crash-loops the receiver"),
    Mutant("clara_airflow/dicom/groups.py", "                        kept += self.merge(",
           "                        kept += 0 and self.merge(", ("tests/unit/dicom/test_receiver_faults.py",),
           "a restart deletes the acknowledged instances of associations still open"),
    Mutant("clara_airflow/dicom/export.py", "                if stat.S_ISLNK(mode):", "                if False:",
           ("tests/unit/dicom/test_export.py",), "a symbolic link a step wrote sends another patient's file"),
    Mutant("clara_airflow/dicom/export.py", "ae.add_requested_context(sop_class, [syntax])",
           "ae.add_requested_context(sop_class)", ("tests/unit/dicom/test_export.py",),
           "a compressed result finds no presentation context"),
    Mutant("clara_airflow/dicom/export.py", "        remaining = [f for f in files if f not in stored]",
           "        remaining = list(files)", ("tests/unit/dicom/test_export.py",),
           "a retry resends instances that were already stored"),
    Mutant("clara_airflow/dicom/receiver.py", "s.ae_title == calling and s.host == host", "s.ae_title == calling",
           ("tests/unit/dicom/test_receiver_rules.py",), "a known AE title is accepted from any address"),
    Mutant("clara_airflow/dicom/receiver.py", "free = shutil.disk_usage(self.inbox).free // 2**20",
           "free = shutil.disk_usage(self.inbox).free // 2**10", ("tests/unit/dicom/test_receiver_rules.py",),
           "free disk space is compared in KiB against a limit in MiB"),
    Mutant("clara_airflow/dicom/receiver.py", "                        stuck.append(group)\n",
           "                        pass\n", ("tests/unit/dicom/test_receiver_rules.py",),
           "a release whose instances could not join their group deletes them (acknowledged, then lost)"),
    Mutant("clara_airflow/dicom/receiver.py", "                    del self._sending[key]\n",
           "                    pass\n", ("tests/unit/dicom/test_receiver_rules.py",),
           "an aborted association's group stays pending for ever (groups_pending never falls back)"),
    Mutant("clara_airflow/dicom/receiver.py",
           "                self.folders.rejoin(called, group, stuck.get((called, group), ()))\n",
           "                pass\n", ("tests/unit/dicom/test_receiver_rules.py",),
           "a group completes without the acknowledged instances a release could not move into it"),
    Mutant("clara_airflow/compiler/export.py", "    unknown = [n for n in names if n not in known]",
           "    unknown = []", ("tests/unit/dicom/test_export_rules.py",),
           "a register-results destination that is not configured passes the DAG build"),
    # issue 23: where clara-airflow meets Airflow's task runtime
    Mutant("clara_airflow/airflow_compat.py", "    return value if isinstance(value, str) else str(value)\n",
           "    return str(state)\n", ("tests/unit/test_airflow_compat.py",),
           "a run state read inside a task is the SDK enum's text ('DagRunState.RUNNING')"),
    Mutant("clara_airflow/airflow_compat.py", "    detail = getattr(getattr(exc, \"error\", None), \"detail\", None)\n",
           "    detail = None\n", ("tests/unit/test_airflow_compat.py",),
           "a worker's wrapped 404 (the run is gone) is read as an unreadable state"),
    Mutant("clara_airflow/batch/run.py", "    return FAILED if FAILED in found else NOT_RUN\n", "    return FAILED\n",
           ("tests/unit/test_batch_run.py",), "a study whose steps never ran (a service failed) counts a failure"),
    Mutant("clara_airflow/batch/ledger.py", "            return version, Entry(CORRUPT, output=str(path),",
           "            raise\n            return version, Entry(CORRUPT, output=str(path),", ("tests/unit/test_batch_run.py",),
           "a torn ledger entry raises and wedges every later claim"),
    Mutant("clara_airflow/durable.py", "    except FileExistsError:\n        return False", "    except OSError:\n        return False",
           ("tests/unit/test_durable.py", "tests/unit/test_batch_ledger.py"),
           "a link that fails for want of space or permission is read as 'another run won'"),
    Mutant("clara_airflow/priority.py", "min(1 + max(downstream, 0), BAND - 1)", "(1 + max(downstream, 0))",
           ("tests/unit/test_priority.py",), "a huge pipeline's weight leaves its priority band"),
    Mutant("clara_airflow/services/leases.py", "if written_age > STOP_INTENT_STALE + CLOCK_SKEW or",
           "if written_age > STOP_INTENT_STALE or", ("tests/unit/test_leases_rules.py",),
           "a live stop on a host whose clock is ahead is taken for a dead one"),
    Mutant("clara_airflow/backends/gpus.py", "            fcntl.flock(lock, fcntl.LOCK_EX)\n", "            pass\n",
           ("tests/unit/backends/test_gpus.py",), "two task processes of one host take the same GPU at once"),
    Mutant("clara_airflow/backends/gpus.py", "return state not in ENDED", "return False",
           ("tests/unit/backends/test_gpus.py",), "a GPU is handed out while a killed task's container still runs on it"),
    Mutant("clara_airflow/backends/gpus.py", "return pid > 0 and start_time(pid) == started != 0", "return pid > 0",
           ("tests/unit/backends/test_gpus.py",), "a reused process id keeps a dead holder's GPU forever"),
    Mutant("clara_airflow/dicom/routing.py", "return all(any(pattern.fullmatch(v)", "return all(any(pattern.match(v)",
           ("tests/unit/dicom/test_routing.py",), "a routing rule matches a prefix (CHEST routes CHESTWALL)"),
    Mutant("clara_airflow/batch/retention.py",
           "if state in LIVE_STATES or state not in ENDED_STATES or state == GONE or ended is None:",
           "if state in LIVE_STATES:", ("tests/unit/test_retention.py",),
           "retention deletes the outputs of a run whose end date (or the run itself) Airflow cannot give"),
    Mutant("clara_airflow/dicom/health.py", "if not hmac.compare_digest(given, expected):", "if not given:",
           ("tests/unit/dicom/test_health.py",), "the status port answers any bearer token"),
    Mutant("clara_airflow/backends/kubernetes_watch.py", "permanent = bool(_PERMANENT_PULL.search(message))",
           "permanent = True", ("tests/unit/backends/test_kubernetes_watch.py",),
           "a registry's 429 or 5xx fails a service start instead of being waited out"),
    Mutant("clara_airflow/backends/kubernetes.py", "        elif sole_user is None or not sole_user():",
           "        elif sole_user is None:", ("tests/unit/backends/test_kubernetes_manager.py",),
           "a rotated pull secret restarts a service that another run is using"),
    Mutant("clara_airflow/backends/kubernetes_watch.py", "if not chosen or chosen[0].provisioner not in RWO_ONLY:",
           "if not chosen:", ("tests/unit/backends/test_kubernetes_watch.py",),
           "every ReadWriteMany claim is refused, even of an NFS or EFS class"),
    Mutant("clara_airflow/dicom/reactor.py", "seconds = POLL if busy else _REACTOR_SLEEP",
           "seconds = POLL", ("tests/unit/dicom/test_reactor.py",),
           "idle associations poll every 0.1 ms (a fifth of a core each)"),
]


def uses_docker(mutant: Mutant) -> bool:
    return any(t.startswith(("tests/integration/", "tests/browser/")) for t in mutant.tests)


def run_one(n: int, mutant: Mutant, root: Path = REPO) -> bool:
    """True when the tests kill the mutant (fail with it in place), run in the checkout at ``root``."""
    path = root / mutant.module
    source = path.read_text()
    if source.count(mutant.original) != 1:
        raise SystemExit(f"mutant {n} ({mutant.what}): its source text is not found exactly once in "
                         f"{mutant.module}; update scripts/mutants.py")
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's package, not the editable install's
    try:
        path.write_text(source.replace(mutant.original, mutant.mutated))
        result = subprocess.run([*PYTEST, *mutant.tests], cwd=root, env=env, capture_output=True, text=True,
                                timeout=600)
    finally:
        path.write_text(source)
    return result.returncode != 0


def copy_checkout() -> Path:
    """A copy of the checkout's files (tracked, and untracked ones git does not ignore) to mutate."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    root = Path(tempfile.mkdtemp(prefix="clara-mutants-"))
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="mutant numbers (1-based)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="mutants tested at once, each in a copy of the checkout (default: 2 where there are "
                             "2 cores); the ones whose tests use the Docker engine never run at the same time")
    parser.add_argument("--docker", choices=("yes", "no", "only"), default="yes",
                        help="with the mutants whose tests use the Docker engine (yes), without them (no), or "
                             "only them (only)")
    args = parser.parse_args()
    chosen = [n for n in args.only or range(1, len(MUTANTS) + 1)
              if args.docker == "yes" or uses_docker(MUTANTS[n - 1]) == (args.docker == "only")]
    copies: queue.Queue[Path] = queue.Queue()
    for _ in range(max(1, args.jobs)):
        copies.put(copy_checkout())
    docker = threading.Lock()  # tests/integration/ share the engine's networks and service names

    def one(n: int) -> tuple[int, bool]:
        mutant, root = MUTANTS[n - 1], copies.get()
        began = time.monotonic()
        try:
            with docker if uses_docker(mutant) else contextlib.nullcontext():
                killed = run_one(n, mutant, root)
        finally:
            copies.put(root)
        print(f"{'killed  ' if killed else 'SURVIVED'} {n:2d} {mutant.module}: {mutant.what} "
              f"({time.monotonic() - began:.1f} s)", flush=True)
        return n, killed

    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            survivors = sorted(n for n, killed in pool.map(one, chosen) if not killed)
    finally:
        while not copies.empty():
            shutil.rmtree(copies.get(), ignore_errors=True)
    total = len(chosen)
    print(f"mutation sample: {total - len(survivors)}/{total} killed ({100 * (total - len(survivors)) / max(total, 1):.0f} %)"
          + (f"; SURVIVED: {', '.join(map(str, survivors))}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
