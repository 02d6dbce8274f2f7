#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: sets everything up (scripts/setup.sh), then runs
# ruff, mypy and pytest (unit, Docker, Kubernetes-with-fakes and browser tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"; .venv/bin/ruff check clara_airflow tests dags scripts
echo "[test] mypy"; .venv/bin/mypy
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
