"""The two parts of scripts/gpu_check.sh (standard library, nvidia-ml-py and clara_airflow.backends.gpus)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clara_airflow.backends.gpus import GpuPool, Holder, detect, start_time

IMAGE = "clara-airflow/gpu-check:1"


def say(text: str) -> None:
    print(f"[gpu-check] {text}", flush=True)


def smi_list() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    return [line for line in done.stdout.splitlines() if line.startswith("GPU ")]


def part_auto() -> tuple[str, ...]:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        say("SKIP part 1: nvidia-ml-py is not importable (run `bash scripts/gpu_check.sh --prepare` where the "
            "package index is reachable, and carry .gpu-check/)")
        return ()
    found = detect()
    listed = smi_list()
    say(f"part 1: gpus = auto found {len(found)} GPU(s) through NVML: {', '.join(found) or 'none'}")
    for line in listed:
        say(f"        nvidia-smi -L: {line}")
    if not found and not listed:
        say("SKIP part 1: no NVIDIA GPU or driver on this machine (NVML not found, no nvidia-smi)")
        return ()
    missing = [line for line in listed if not any(uuid in line for uuid in found)]
    if missing or len(found) != len(listed):
        say(f"FAIL part 1: NVML and nvidia-smi disagree: {len(found)} vs {len(listed)}; not found: {missing}")
        raise SystemExit(1)
    say(f"PASS part 1: every GPU nvidia-smi lists ({len(listed)}) is in the inventory")
    return found


def nvidia_engine() -> str | None:
    """Why two GPU containers cannot be run here, or None when they can."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    done = subprocess.run([docker, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        return f"the Docker engine does not answer ({done.stderr.strip()[:200]})"
    if "nvidia" not in done.stdout and not shutil.which("nvidia-container-cli"):
        return "the Docker engine has no NVIDIA runtime (nvidia-container-toolkit)"
    return None


def build_image() -> None:
    """An image of the C library nvidia-smi needs; the NVIDIA runtime mounts nvidia-smi and the driver."""
    smi = shutil.which("nvidia-smi")
    assert smi is not None
    libraries = set()
    for line in subprocess.run(["ldd", smi], capture_output=True, text=True).stdout.splitlines():
        for word in line.split():
            if word.startswith("/") and "nvidia" not in word:
                libraries.add(word)
    with tempfile.TemporaryDirectory() as root:
        for library in libraries:
            target = Path(root) / library.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(library), target)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()


def part_containers(inventory: tuple[str, ...]) -> None:
    why = nvidia_engine() if inventory else "part 1 found no GPU"
    if why is not None:
        say(f"SKIP part 2: {why}")
        return
    build_image()
    state = tempfile.mkdtemp(prefix="clara-gpu-check-")

    def probe(name: str) -> str | None:
        done = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", name], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    pool = GpuPool(inventory, state, probe)
    names = [f"clara-gpu-check-{i}-{os.getpid()}" for i in range(min(2, len(inventory)))]
    me = os.getpid()
    given = {name: pool.take(1, Holder(container=name, pid=me, started=start_time(me), since=time.time(),
                                       task_id=name), wait=0)[0] for name in names}
    runs = {name: subprocess.Popen(["docker", "run", "--rm", "--name", name, "--gpus", f"device={device}",
                                    "-e", "NVIDIA_DRIVER_CAPABILITIES=utility", IMAGE, "nvidia-smi", "-L"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, device in given.items()}
    seen = {}
    for name, run in runs.items():
        out, _ = run.communicate(timeout=120)
        pool.release(name)
        lines = [line for line in out.splitlines() if line.startswith("GPU ")]
        say(f"part 2: {name} was given {given[name]}; nvidia-smi -L inside: {' | '.join(lines) or out.strip()}")
        if run.returncode != 0 or len(lines) != 1 or (given[name] not in lines[0] and not given[name].isdigit()):
            say(f"FAIL part 2: {name} should see exactly its GPU {given[name]}")
            raise SystemExit(1)
        seen[name] = lines[0]
    if len(names) < 2:
        say("PASS part 2 (one container: this machine has one GPU, so two at once cannot differ)")
    elif len(set(seen.values())) != len(seen):
        say(f"FAIL part 2: two containers saw the same GPU: {seen}")
        raise SystemExit(1)
    else:
        say("PASS part 2: two one-GPU containers ran at once, each seeing only its own, different GPU")


if __name__ == "__main__":
    part_containers(part_auto())
