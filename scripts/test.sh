#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: sets everything up (scripts/setup.sh), then runs
# ruff, mypy, a fixed sample of 58 planted bugs that the tests must catch (scripts/mutants.py), pytest
# (unit, Docker, Kubernetes-with-fakes and browser tests; extra arguments go to it), then the oldest
# supported Airflow (scripts/matrix.sh 3.1.8) and 50 concurrent runs on the CeleryExecutor cluster.
#
# To stay within CI's time on 2 cores, what mostly waits is overlapped with what computes: the pin check
# (pip's resolution) and the Airflow 3.1 venv's install run while ruff, mypy and the mutation sample do,
# and the Airflow 3.1 leg runs beside the cluster leg (its output is printed once it ends). Each line says when it began, in seconds from the start.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[test] %s (at %d s)\n' "$*" "$SECONDS"; }
bash scripts/setup.sh
mkdir -p .matrix
say "Airflow 3.1: installing its venv in the background (.matrix/prepare-3.1.8.log)"
bash scripts/matrix.sh --prepare 3.1.8 >.matrix/prepare-3.1.8.log 2>&1 &
prepare=$!
# Every environment the scripts build resolves to the versions its pin file names, and nothing else
# (README, "Pinned environments"): a new release on the package index cannot change what runs below.
# pip's resolution mostly waits on the index: it runs in the background too, and is waited for below.
say "pins: checking in the background (.matrix/pins.log)"
.venv/bin/python scripts/pins.py check >.matrix/pins.log 2>&1 &
pins=$!
say ruff; .venv/bin/ruff check clara_airflow tests dags scripts
say mypy; .venv/bin/mypy
say "mutation sample (58 planted bugs, each must fail the tests that cover it)"
.venv/bin/python scripts/mutants.py
say "pins: waiting"
if ! wait "$pins"; then cat .matrix/pins.log; say "FAILED: pins"; exit 1; fi
grep '^\[pins\]' .matrix/pins.log || true
say pytest
.venv/bin/python -m pytest "$@"
say "Airflow 3.1: waiting for its venv"
if ! wait "$prepare"; then cat .matrix/prepare-3.1.8.log; say "FAILED: the Airflow 3.1 venv"; exit 1; fi
# The version matrix's oldest Airflow (the pytest run above is the newest, 3.3); the middle one and the
# whole matrix: `bash scripts/matrix.sh` (README, "Supported Airflow versions").
say "Airflow 3.1: unit, DagBag and one Docker end-to-end run in .matrix/airflow-3.1.8 (beside the next leg)"
setsid bash scripts/matrix.sh 3.1.8 >.matrix/leg-3.1.8.log 2>&1 &  # its own group: stopped whole on exit
leg=$!
# The distributed Airflow (CeleryExecutor, PostgreSQL, Redis, two workers): the 50-run test. The fault
# tests (worker killed, reaper under load, PostgreSQL restarted) take 15 minutes more; README, "On a
# distributed Airflow". Stops the cluster it used, also when a test fails.
say "distributed: cluster.sh up, 50 concurrent runs through the REST API, cluster.sh down"
# (|| true: errexit applies inside the trap too, and a leg that already ended is no error)
trap 'kill -- -"$leg" 2>/dev/null || true; bash scripts/cluster.sh down >/dev/null || true' EXIT
bash scripts/cluster.sh up
.venv/bin/python -m pytest -q -rs tests/distributed/test_cluster.py --run-distributed -s -k fifty
say "Airflow 3.1: waiting for its leg"
status=0
wait "$leg" || status=$?
cat .matrix/leg-3.1.8.log
if ((status)); then say "FAILED: Airflow 3.1"; exit 1; fi
say passed
