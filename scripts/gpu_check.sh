#!/usr/bin/env bash
# The GPU check of [clara] gpus, for a machine with NVIDIA GPUs (docs/gpus.md). Two parts, each skipped
# cleanly (exit 0, saying why) where it cannot run:
#   1. `gpus = auto` finds every GPU through NVML (nvidia-ml-py), compared with `nvidia-smi -L`;
#   2. where a Docker engine with the NVIDIA runtime is present: two one-GPU containers at once in
#      device_requests mode (the devices the allocator assigned, as `--gpus device=<id>`), and
#      `nvidia-smi -L` inside each shows that they see different GPUs.
#
#   bash scripts/gpu_check.sh --prepare   # here (package index reachable): .gpu-check/ holds nvidia-ml-py, pinned
#   bash scripts/gpu_check.sh             # on the GPU machine, from the repository with .gpu-check/ (no index needed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    pin=$(grep '^nvidia-ml-py==' constraints.txt)
    python3 -m pip install -q --disable-pip-version-check --no-deps --target .gpu-check "$pin"
    echo "[gpu-check] .gpu-check/ holds $pin; carry it with the repository to the GPU machine"
    exit 0
fi
export PYTHONPATH="$PWD/.gpu-check:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 scripts/gpu_check.py "$@"
