"""What the run-time benchmarks share: the same chain of 1 s steps as Clara YAML and as a hand-written DAG."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = 4


def chain_pipeline(name: str, steps: int = STEPS) -> str:
    """A Clara pipeline of ``steps`` operators in a chain, each sleeping 1 s in the local busybox image."""
    return f"api-version: 0.4.0\nname: {name}\noperators:\n" + "".join(
        f"- name: step{n}\n  container:\n    image: clara-airflow/busybox\n    tag: '1'\n"
        f"    command: [/bin/sh, -c, sleep 1]\n  input:\n  - path: /in\n" + (f"    from: step{n - 1}\n" if n else "")
        + "  output:\n  - path: /out\n" for n in range(steps))


def chain_dag_file(dag_id: str, network: str, steps: int = STEPS) -> str:
    """The same chain as a DAG file written by hand with the docker provider's DockerOperator."""
    return f'''
from datetime import datetime, timezone
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG, chain

with DAG("{dag_id}", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc)):
    chain(*[DockerOperator(task_id=f"step{{n}}", image="clara-airflow/busybox:1", command=["/bin/sh", "-c", "sleep 1"],
                           network_mode="{network}", mount_tmp_dir=False, auto_remove="force")
            for n in range({steps})])
'''


def web_service(label: str) -> list[str]:
    """The shared service of the batch and cluster benchmarks: busybox httpd answering ``ok`` on 8080."""
    return ["/bin/sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
            label]


# The 3-step pipeline of the batch and cluster benchmarks: (name, shell script, input from); the middle
# step asks the shared service.
WEB_STEPS = [
    ("read", "cat /in/study.txt > /out/read.txt", None),
    ("infer", "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${WEB%:*} ${WEB#*:} > /out/answer; "
              "cp /in/read.txt /out/", "read"),
    ("write", "tr a-z A-Z < /in/read.txt > /out/result.txt", "infer"),
]


def web_pipeline(dag_id: str, inbox: object, service: list[str]) -> str:
    """WEB_STEPS as a Clara pipeline in batch mode over ``inbox``, the middle step using ``service``."""
    text = (f"  services:\n  - name: web\n    container:\n      image: clara-airflow/busybox\n      tag: '1'\n"
            f"      command: {service!r}\n    connections:\n      http:\n      - name: WEB\n        port: 8080\n")
    out = f"api-version: 0.4.0\nname: {dag_id}\nx-airflow:\n  batch: {{inbox: {inbox}, max_studies: 10000}}\noperators:\n"
    for name, script, source in WEB_STEPS:
        out += (f"- name: {name}\n  container:\n    image: clara-airflow/busybox\n    tag: '1'\n"
                f"    command: ['/bin/sh', '-c', {script!r}]\n  input:\n  - path: /in\n"
                + (f"    from: {source}\n" if source else "") + "  output:\n  - path: /out\n"
                + (text if name == "infer" else ""))
    return out


TICKS = os.sysconf("SC_CLK_TCK")
COMPONENTS = ("scheduler", "api-server", "dag-processor", "triggerer", "celery")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy so far, all cores together (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def cpu_by_component(root: int) -> dict[str, float]:
    """CPU seconds used so far by each direct child of process ``root`` with all its descendants, reaped
    ones included, named by the child's command line (``airflow scheduler`` -> ``scheduler``); and
    ``docker``: dockerd, containerd and the live container shims with theirs. A shim that has exited is
    counted nowhere (init reaps it): compare with :func:`machine_busy`."""
    table: dict[int, tuple[int, float, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().rsplit(")", 1)
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = rest.split()
        name = comm.split("(", 1)[1]
        words = b" ".join(argv).decode(errors="replace").replace("_", "-").split()
        if "airflow" in " ".join(words):  # 'python .../airflow scheduler', or the title Airflow set
            name = next((w for w in words if w in COMPONENTS), name)
        table[int(stat.parent.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS, name)
    used: dict[str, float] = {}
    for pid, (_, seconds, _name) in table.items():
        component, walker = None, pid
        while walker in table and component is None:
            parent, _, own = table[walker]
            if parent == root:
                component = table[walker][2]
            elif own in ("dockerd", "containerd") or own.startswith("containerd-shim"):
                component = "docker"
            walker = parent
        if component is not None:
            used[component] = used.get(component, 0.0) + seconds
    return used


def task_instances(get: Callable[[str], dict[str, Any]], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of a run, mapped ones included, through the REST API's GET ``get(path)``, page
    by page (it returns at most 100 at a time)."""
    found: list[dict[str, Any]] = []
    while True:
        page = get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(found)}")
        found += page["task_instances"]
        if not page["task_instances"] or len(found) >= page["total_entries"]:
            return found
