"""Service ensure benchmark against a real Docker engine, measured side by side and printed as ratios.

    bash scripts/setup.sh && .venv/bin/python scripts/bench_services.py [--repeat 7]

Anchors (AIRFLOW-NOTES, "Measured baselines"):
- cold: the docker SDK creating and starting the same service container by hand and polling its
  port until it accepts a connection (the readiness rule of clara-pdl 7.4); target <= 1.2x.
- warm: one SDK ``inspect_container`` by name; target: a warm ensure <= 20 ms in absolute terms.

Our side is ``DockerServiceManager.ensure`` on the stand-in inference server image; the Variable
write of the ensure task is not included (it needs an Airflow database; ``scripts/demo.sh`` prints
the ensure task's own timing).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="clara-bench-"))
sys.path.insert(0, str(REPO))
IMAGE, TAG, PORT = "clara-airflow/kserve-stub", "0.1", 8000
# An identity of its own (the stub ignores the extra flag), so a shared service in use is never touched.
COMMAND = ["tritonserver", "--model-repository=/opt/models", "--log-verbose=0", "--clara-bench"]
NETWORK = "clara-airflow-bench"


def service_plan() -> object:
    from clara_airflow.compiler.compiler import compile_pipeline
    from clara_airflow.spec.load import load_pipeline

    text = (f"api-version: 0.4.0\nname: bench-services\noperators:\n- name: op\n  container:\n"
            f"    image: clara-airflow/busybox\n    tag: '1'\n  services:\n  - name: infer\n    container:\n"
            f"      image: {IMAGE}\n      tag: '{TAG}'\n      command: [{', '.join(COMMAND)}]\n"
            f"    connections:\n      http:\n      - name: INFER_URI\n        port: {PORT}\n")
    path = Path(tempfile.mkdtemp(prefix="clara-bench-")) / "bench-services.yaml"
    path.write_text(text)
    (svc,) = compile_pipeline(load_pipeline(path)).services
    return svc


def wait_port(address: str, port: int) -> None:
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)


def raw_cold(cli: object, n: int) -> float:
    """What a hand-written task would do: create, start, inspect for the address, poll the port."""
    began = time.perf_counter()
    host = cli.create_host_config(network_mode=NETWORK, init=True)  # type: ignore[attr-defined]
    box = cli.create_container(image=f"{IMAGE}:{TAG}", name=f"clara-bench-raw-{n}", host_config=host,  # type: ignore[attr-defined]
                               command=COMMAND, detach=True)
    cli.start(box["Id"])  # type: ignore[attr-defined]
    info = cli.inspect_container(box["Id"])  # type: ignore[attr-defined]
    wait_port(info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"], PORT)
    seconds = time.perf_counter() - began
    cli.remove_container(box["Id"], force=True)  # type: ignore[attr-defined]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    from clara_airflow.backends.docker import DockerServiceManager
    from clara_airflow.backends.docker_engine import docker_client, ensure_network
    from clara_airflow.compiler.identity import service_name
    from clara_airflow.settings import Deployment, Options
    from clara_airflow.spec.defaults import pipeline_settings

    log = logging.getLogger("bench")
    log.setLevel(logging.WARNING)
    data_dir = tempfile.mkdtemp(prefix="clara-bench-data-")
    manager = DockerServiceManager(Options(pipeline_settings({"services.data_dir": data_dir}), Deployment(network=NETWORK)))
    cli = docker_client(manager.url)
    ensure_network(cli, NETWORK)
    svc = service_plan()
    name = service_name(svc.id)  # type: ignore[attr-defined]

    def remove() -> None:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            cli.remove_container(name, force=True)

    cold_raw, cold_ours, warm_ours, warm_raw = [], [], [], []
    for n in range(args.repeat):
        remove()
        cold_raw.append(raw_cold(cli, n))
        began = time.perf_counter()
        instance = manager.ensure(svc, timeout=60, log=log)  # type: ignore[arg-type]
        cold_ours.append(time.perf_counter() - began)
        assert instance.created, "the cold ensure must have started the container"
        for _ in range(5):
            began = time.perf_counter()
            cli.inspect_container(name)
            warm_raw.append(time.perf_counter() - began)
            began = time.perf_counter()
            manager.ensure(svc, timeout=60, log=log)  # type: ignore[arg-type]
            warm_ours.append(time.perf_counter() - began)
    remove()
    ms = {k: statistics.median(v) * 1000 for k, v in
          {"cold_raw": cold_raw, "cold_ours": cold_ours, "warm_raw": warm_raw, "warm_ours": warm_ours}.items()}
    print(f"cold start, SDK by hand (create+start+port):  {ms['cold_raw']:8.1f} ms")
    print(f"cold ensure, DockerServiceManager.ensure:     {ms['cold_ours']:8.1f} ms   "
          f"ratio {ms['cold_ours'] / ms['cold_raw']:.2f}x (target <= 1.2x)")
    print(f"warm check, SDK inspect by name:              {ms['warm_raw']:8.1f} ms")
    print(f"warm ensure, DockerServiceManager.ensure:     {ms['warm_ours']:8.1f} ms   "
          f"(target <= 20 ms with the Variable write)")
    print(f"(medians of {args.repeat} cold and {5 * args.repeat} warm trials, interleaved)")


if __name__ == "__main__":
    main()
