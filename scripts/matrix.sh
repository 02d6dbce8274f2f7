#!/usr/bin/env bash
# The Airflow version matrix: for each Airflow 3 minor we support (latest patch), a venv of its own under
# .matrix/, then the unit tests, the DagBag tests and one Docker end-to-end run under dag.test().
#
#   bash scripts/matrix.sh                 # 3.1.8 3.2.2 3.3.2 (the supported range)
#   bash scripts/matrix.sh 3.1.8           # one version (CI runs the oldest; the main suite is the newest)
#   bash scripts/matrix.sh --prepare 3.1.8 # only build the venv (scripts/test.sh does it in the background)
#   bash scripts/matrix.sh --part unit 3.1.8    # only the unit and DagBag tests (no Docker engine used)
#   bash scripts/matrix.sh --part docker 3.1.8  # only the Docker end-to-end run
#
# Each venv gets Airflow at that version and clara-airflow with its extras, every package pinned by
# constraints/airflow-<version>.txt (3.3: constraints.txt); `scripts/pins.py refresh` rewrites them.
# Prints one line per version and exits non-zero when any version fails. Needs scripts/setup.sh first
# (Docker engine and local images).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare=false part=all
if [ "${1:-}" = --prepare ]; then prepare=true; shift; fi
if [ "${1:-}" = --part ]; then
  part=${2:?--part unit or --part docker}; shift 2
  case $part in unit|docker) ;; *) echo "--part: unit or docker, not $part" >&2; exit 2 ;; esac
fi
versions=("$@")
((${#versions[@]})) || versions=(3.1.8 3.2.2 3.3.2)

log() { printf '\033[1m[matrix]\033[0m %s\n' "$*"; }

make_venv() {  # $1 version, $2 venv folder
  local version=$1 venv=$2 pins
  pins=$(python3 scripts/pins.py file "$version") || return 1  # e.g. constraints/airflow-3.1.8.txt
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt pyproject.toml ] && [ "$venv/.installed" -nt "$pins" ]; then
    return
  fi
  log "Airflow $version: installing into $venv (every package pinned by $pins)"
  # Each version's file was resolved once on a clean machine and passed this matrix (scripts/pins.py
  # says which versions each needed: cryptography<51 on 3.1, our fastapi/cadwyn/pydantic on 3.2).
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$pins" pip setuptools wheel || return 1
  "$venv/bin/pip" install -q --no-build-isolation -c "$pins" "apache-airflow==$version" \
    -e ".[docker,kubernetes,dicom]" pytest hypothesis kmock pytest-asyncio playwright || return 1
  python3 scripts/pins.py check --installed "$version" || return 1  # the venv holds exactly the pins
  touch "$venv/.installed"
}

run_version() {  # $1 version; prints the result line
  local version=$1 venv=".matrix/airflow-$version" started=$SECONDS
  make_venv "$version" "$venv" || return 1
  local got
  got=$("$venv/bin/python" -c 'import airflow; print(airflow.__version__)')
  [ "$got" = "$version" ] || { echo "Airflow $version: the venv has $got"; return 1; }
  if [ "$part" != docker ]; then
    log "Airflow $version: unit and DagBag tests"
    "$venv/bin/python" -m pytest -q -m "not slow and not browser and not distributed and not docker" tests \
      --ignore=tests/browser || return 1
  fi
  if [ "$part" != unit ]; then
    log "Airflow $version: one Docker end-to-end run under dag.test()"
    "$venv/bin/python" -m pytest -q tests/integration/test_docker.py -k demo_pipeline_runs_end_to_end || return 1
  fi
  log "Airflow $version: passed ($part) in $((SECONDS - started)) s"
}

if $prepare; then
  for version in "${versions[@]}"; do make_venv "$version" ".matrix/airflow-$version"; done
  exit
fi
failed=()
for version in "${versions[@]}"; do
  run_version "$version" || failed+=("$version")
done
if ((${#failed[@]})); then
  log "FAILED on Airflow ${failed[*]}"
  exit 1
fi
log "passed on Airflow ${versions[*]}"
