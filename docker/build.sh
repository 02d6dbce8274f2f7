#!/usr/bin/env bash
# Builds every image clara-airflow's tests and demo need, locally, pulling nothing from a registry.
# An image that already exists is kept unless CLARA_REBUILD=1; images built from this folder are
# rebuilt when their folder's content changed (the content hash is kept in a label).
set -euo pipefail
cd "$(dirname "$0")"
export DOCKER_BUILDKIT=0

have() { [ "${CLARA_REBUILD:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
digest() { find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16; }
current() { docker image inspect -f '{{ index .Config.Labels "clara-airflow.content" }}' "$1" 2>/dev/null || true; }

build_dir() {  # build_dir IMAGE FOLDER
  local sum; sum=$(digest "$2")
  if [ "${CLARA_REBUILD:-0}" != 1 ] && [ "$(current "$1")" = "$sum" ]; then return; fi
  echo "[images] building $1"
  local out; out=$(mktemp)
  docker build -q --label "clara-airflow.content=$sum" -t "$1" "$2" >"$out" 2>&1 || { cat "$out" >&2; rm -f "$out"; exit 1; }
  rm -f "$out"
}

if ! have clara-airflow/busybox:1; then
  cp /bin/busybox busybox/busybox
fi
[ -f busybox/busybox ] || cp /bin/busybox busybox/busybox
build_dir clara-airflow/busybox:1 busybox
if ! have clara-airflow/python-base:bookworm; then
  echo "[images] building clara-airflow/python-base:bookworm with mmdebstrap (about a minute)"
  bash python-base/build.sh clara-airflow/python-base:bookworm
fi
build_dir clara-airflow/kserve-stub:0.1 kserve-stub
build_dir clara-airflow/demo-ops:0.1 demo-ops
echo "[images] ready: $(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^clara-airflow/' | sort | tr '\n' ' ')"
