#!/usr/bin/env bash
# The demo from a fresh Debian 12 machine (as root): sets everything up (Docker engine, .venv, images),
# then runs the chest-CT demo pipeline twice through Airflow on Docker. Both runs share one inference
# service; the second reuses it. Prints the timings and where the outputs are.
set -euo pipefail
cd "$(dirname "$0")/.."
CLARA_SKIP_BROWSER=1 bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"  # --batch: the nightly batch demo; --dicom: PACS -> receiver -> pipeline -> PACS
