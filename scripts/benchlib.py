"""What the run-time benchmarks share: the same chain of 1 s steps as Clara YAML and as a hand-written DAG."""

from __future__ import annotations

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
