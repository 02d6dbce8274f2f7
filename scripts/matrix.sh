#!/usr/bin/env bash
# The Airflow version matrix: for each Airflow 3 minor we support (latest patch), a venv of its own under
# .matrix/, then the unit tests, the DagBag tests and one Docker end-to-end run under dag.test().
#
#   bash scripts/matrix.sh                 # 3.1.8 3.2.2 3.3.2 (the supported range)
#   bash scripts/matrix.sh 3.1.8           # one version (CI runs the oldest; the main suite is the newest)
#
# Each venv gets Airflow at that version and clara-airflow with its extras, pinned as make_venv explains.
# Prints one line per version and exits non-zero when any version fails. Needs scripts/setup.sh first
# (Docker engine and local images).
set -euo pipefail
cd "$(dirname "$0")/.."

versions=("$@")
((${#versions[@]})) || versions=(3.1.8 3.2.2 3.3.2)

log() { printf '\033[1m[matrix]\033[0m %s\n' "$*"; }

make_venv() {  # $1 version, $2 venv folder
  local version=$1 venv=$2 pins="$2/constraints.txt"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt pyproject.toml ] && [ "$venv/.installed" -nt constraints.txt ]; then
    return
  fi
  log "Airflow $version: installing into $venv"
  # Our direct dependencies are pinned by constraints.txt; the rest follows what that Airflow requires,
  # except on 3.2: unpinned, 3.2.2 resolves fastapi 0.165 and cadwyn 9 and its api-server then fails to
  # build its routes (a pydantic discriminator error), so 3.2 also takes our fastapi, cadwyn and pydantic.
  # (3.1 needs older fastapi, starlette and cadwyn; 3.2 older aiosqlite: neither takes the whole file.)
  local direct='apache-airflow-providers-[a-z-]+|docker|kubernetes|pynetdicom|pydicom|[Pp]y[Yy][Aa][Mm][Ll]|kmock|pytest|hypothesis|pytest-asyncio|playwright'
  [[ $version == 3.1.* ]] || direct+='|fastapi|cadwyn|pydantic|pydantic_core'
  grep -E "^($direct)==" constraints.txt > "$pins"
  "$venv/bin/pip" install -q --upgrade pip || return 1
  "$venv/bin/pip" install -q -c "$pins" "apache-airflow==$version" -e ".[docker,kubernetes,dicom]" \
    pytest hypothesis kmock pytest-asyncio playwright || return 1
  touch "$venv/.installed"
}

run_version() {  # $1 version; prints the result line
  local version=$1 venv=".matrix/airflow-$version" started=$SECONDS
  make_venv "$version" "$venv" || return 1
  local got
  got=$("$venv/bin/python" -c 'import airflow; print(airflow.__version__)')
  [ "$got" = "$version" ] || { echo "Airflow $version: the venv has $got"; return 1; }
  log "Airflow $version: unit and DagBag tests"
  "$venv/bin/python" -m pytest -q -m "not slow and not browser and not distributed" tests --ignore=tests/browser || return 1
  log "Airflow $version: one Docker end-to-end run under dag.test()"
  "$venv/bin/python" -m pytest -q tests/integration/test_docker.py -k demo_pipeline_runs_end_to_end || return 1
  log "Airflow $version: passed in $((SECONDS - started)) s"
}

failed=()
for version in "${versions[@]}"; do
  run_version "$version" || failed+=("$version")
done
if ((${#failed[@]})); then
  log "FAILED on Airflow ${failed[*]}"
  exit 1
fi
log "passed on Airflow ${versions[*]}"
