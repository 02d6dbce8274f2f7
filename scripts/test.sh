#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: sets everything up (scripts/setup.sh), then runs
# ruff, mypy, a fixed sample of 28 planted bugs that the tests must catch (scripts/mutants.py), and pytest
# (unit, Docker, Kubernetes-with-fakes and browser tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"; .venv/bin/ruff check clara_airflow tests dags scripts
echo "[test] mypy"; .venv/bin/mypy
echo "[test] mutation sample (28 planted bugs, each must fail the tests that cover it)"
.venv/bin/python scripts/mutants.py
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
