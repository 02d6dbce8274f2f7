#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: sets everything up (scripts/setup.sh), then runs
# ruff, mypy, a fixed sample of 56 planted bugs that the tests must catch (scripts/mutants.py), pytest
# (unit, Docker, Kubernetes-with-fakes and browser tests; extra arguments go to it), then the oldest
# supported Airflow (scripts/matrix.sh 3.1.8) and 50 concurrent runs on the CeleryExecutor cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Every environment the scripts build resolves to the versions its pin file names, and nothing else
# (README, "Pinned environments"): a new release on the package index cannot change what runs below.
echo "[test] pins"; .venv/bin/python scripts/pins.py check
echo "[test] ruff"; .venv/bin/ruff check clara_airflow tests dags scripts
echo "[test] mypy"; .venv/bin/mypy
echo "[test] mutation sample (56 planted bugs, each must fail the tests that cover it)"
.venv/bin/python scripts/mutants.py
echo "[test] pytest"
.venv/bin/python -m pytest "$@"
# The version matrix's oldest Airflow (the pytest run above is the newest, 3.3); the middle one and the
# whole matrix: `bash scripts/matrix.sh` (README, "Supported Airflow versions").
echo "[test] Airflow 3.1: unit, DagBag and one Docker end-to-end run in .matrix/airflow-3.1.8"
bash scripts/matrix.sh 3.1.8
# The distributed Airflow (CeleryExecutor, PostgreSQL, Redis, two workers): the 50-run test. The fault
# tests (worker killed, reaper under load, PostgreSQL restarted) take 15 minutes more; README, "On a
# distributed Airflow". Stops the cluster it used, also when a test fails.
echo "[test] distributed: cluster.sh up, 50 concurrent runs through the REST API, cluster.sh down"
trap 'bash scripts/cluster.sh down >/dev/null' EXIT
bash scripts/cluster.sh up
.venv/bin/python -m pytest -q -rs tests/distributed/test_cluster.py --run-distributed -s -k fifty
