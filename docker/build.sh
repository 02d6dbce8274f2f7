#!/usr/bin/env bash
# Builds every image clara-airflow's tests and demo need, locally, pulling nothing from a registry.
# Skips an image that already exists unless CLARA_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")"
echo "[images] nothing to build yet"
