#!/usr/bin/env bash
# Prepares this checkout on a fresh Debian 12 machine (run as root): system packages, a running Docker
# engine, .venv with clara-airflow and its test extras (pinned by constraints.txt), and the local images.
# Idempotent: every step is skipped when already done. Used by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

install_system_packages() {
  local wanted=(docker.io busybox-static mmdebstrap ca-certificates orthanc dcmtk)
  [ "${CLARA_SKIP_BROWSER:-0}" = 1 ] || wanted+=(chromium)
  python3 -m venv --help >/dev/null 2>&1 || wanted+=(python3-venv)
  local missing=()
  for pkg in "${wanted[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  log "starting dockerd (log: /var/log/clara-airflow-dockerd.log)"
  # setsid and all three redirects matter: a daemon holding our stdout would keep CI waiting.
  setsid nohup dockerd --storage-driver=overlay2 >/var/log/clara-airflow-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && return; sleep 0.25; done
  tail -n 40 /var/log/clara-airflow-dockerd.log >&2
  echo "dockerd did not start" >&2
  exit 1
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c "import clara_airflow, airflow.providers.docker, kmock" 2>/dev/null \
     || [ pyproject.toml -nt .venv/.clara-installed ] || [ constraints.txt -nt .venv/.clara-installed ]; then
    log "installing clara-airflow[test] into .venv (pinned by constraints.txt)"
    # pip, setuptools and wheel are pinned too, and the project is built with them (no build isolation),
    # so nothing is fetched unpinned: scripts/pins.py check verifies it.
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt pip setuptools wheel
    .venv/bin/pip install -q --no-build-isolation -c constraints.txt -e ".[test]"
    touch .venv/.clara-installed
  fi
}

install_system_packages
start_docker
make_venv
log "building local images"
bash docker/build.sh
log "ready"
