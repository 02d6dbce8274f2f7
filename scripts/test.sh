#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: sets everything up (scripts/setup.sh), then runs
# ruff, mypy, a fixed sample of 59 planted bugs that the tests must catch (scripts/mutants.py), pytest
# (unit, Docker, Kubernetes-with-fakes and browser tests; extra arguments go to both pytest runs), then
# the oldest supported Airflow (scripts/matrix.sh 3.1.8) and 50 concurrent runs on the CeleryExecutor
# cluster.
#
# To stay within CI's time on 2 cores, what mostly waits is overlapped with what computes, in two lanes:
# - the Docker engine's lane: pytest's Docker and browser tests (their log is printed once they end),
#   then the two sample mutants whose tests use the engine, then the cluster leg beside the Airflow 3.1
#   Docker run. Only this lane uses the engine: its tests share its networks and service containers.
# - the other lane, beside it: ruff and mypy, pytest's other tests (none use the engine), the sample's
#   other mutants, and the Airflow 3.1 unit tests, in a venv installed in the background from the start,
#   as the pin check (pip's resolution) is.
# Each line says when it began, in seconds from the start.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[test] %s (at %d s)\n' "$*" "$SECONDS"; }
# pytest with a selection: "no tests collected" (status 5) is no failure when extra arguments pick tests
# of one lane only.
lane_pytest() { local status=0; .venv/bin/python -m pytest "$@" || status=$?; ((status == 0 || status == 5)); }
bash scripts/setup.sh
mkdir -p .matrix
engine= leg=
# A lane still running on exit is stopped with SIGTERM, which pytest takes as Ctrl-C (tests/conftest.py):
# its fixtures' teardown stops the airflow standalone and containers it started, given up to 60 s.
stop_group() { kill -- -"$1" 2>/dev/null || return 0; for _ in $(seq 60); do kill -0 -- -"$1" 2>/dev/null || return 0; sleep 1; done; }
# (|| true: errexit applies inside the trap too, and a lane that already ended is no error)
trap '[ -z "$engine" ] || stop_group "$engine" || true; [ -z "$leg" ] || stop_group "$leg" || true
      bash scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
# The engine's lane is the longer one: it starts first, and everything below runs beside it.
say "pytest: the Docker and browser tests, in the engine's lane (.matrix/pytest-docker.log)"
export -f lane_pytest
setsid bash -c 'lane_pytest -m "docker or browser" "$@"' lane "$@" >.matrix/pytest-docker.log 2>&1 &
engine=$!  # its own process group: stopped whole on exit
say "Airflow 3.1: installing its venv in the background (.matrix/prepare-3.1.8.log)"
bash scripts/matrix.sh --prepare 3.1.8 >.matrix/prepare-3.1.8.log 2>&1 &
prepare=$!
# Every environment the scripts build resolves to the versions its pin file names, and nothing else
# (README, "Pinned environments"): a new release on the package index cannot change what runs below.
say "pins: checking in the background (.matrix/pins.log)"
.venv/bin/python scripts/pins.py check >.matrix/pins.log 2>&1 &
pins=$!
say ruff; .venv/bin/ruff check clara_airflow tests dags scripts
say mypy; .venv/bin/mypy
say "pytest: the other tests, beside them"
lane_pytest -m "not docker and not browser" "$@"
say "mutation sample without the Docker engine (57 planted bugs, each must fail the tests that cover it)"
.venv/bin/python scripts/mutants.py --docker no --jobs 1
say "Airflow 3.1: waiting for its venv"
if ! wait "$prepare"; then cat .matrix/prepare-3.1.8.log; say "FAILED: the Airflow 3.1 venv"; exit 1; fi
# The version matrix's oldest Airflow (the pytest runs above are the newest, 3.3); the middle one and the
# whole matrix: `bash scripts/matrix.sh` (README, "Supported Airflow versions").
say "Airflow 3.1: unit and DagBag tests in .matrix/airflow-3.1.8"
bash scripts/matrix.sh --part unit 3.1.8
say "pins: waiting"
if ! wait "$pins"; then cat .matrix/pins.log; say "FAILED: pins"; exit 1; fi
grep '^\[pins\]' .matrix/pins.log || true
say "pytest: waiting for the Docker and browser tests"
status=0
wait "$engine" || status=$?
engine=
cat .matrix/pytest-docker.log
if ((status)); then say "FAILED: the Docker and browser tests"; exit 1; fi
say "mutation sample with the Docker engine (2 planted bugs)"
.venv/bin/python scripts/mutants.py --docker only
say "Airflow 3.1: one Docker end-to-end run (beside the next leg)"
setsid bash scripts/matrix.sh --part docker 3.1.8 >.matrix/leg-3.1.8.log 2>&1 &
leg=$!
# The distributed Airflow (CeleryExecutor, PostgreSQL, Redis, two workers): the 50-run test. The fault
# tests (worker killed, reaper under load, PostgreSQL restarted) take 15 minutes more; README, "On a
# distributed Airflow". Stops the cluster it used, also when a test fails.
say "distributed: cluster.sh up, 50 concurrent runs through the REST API, cluster.sh down"
bash scripts/cluster.sh up
.venv/bin/python -m pytest -q -rs tests/distributed/test_cluster.py --run-distributed -s -k fifty
say "Airflow 3.1: waiting for its Docker run"
status=0
wait "$leg" || status=$?
leg=
cat .matrix/leg-3.1.8.log
if ((status)); then say "FAILED: Airflow 3.1"; exit 1; fi
say passed
