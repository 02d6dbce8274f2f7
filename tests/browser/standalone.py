"""Starts `airflow standalone` in a throw-away home for browser tests, and stops it with its group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Standalone:
    home: Path
    url: str
    password: str
    process: subprocess.Popen[bytes]
    payload: Path
    output: Path

    def token(self) -> str:
        request = urllib.request.Request(f"{self.url}/auth/token", method="POST",
                                         data=json.dumps({"username": "admin", "password": self.password}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(json.loads(answer.read())["access_token"])

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", method=method or ("POST" if body is not None else "GET"),
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.token()}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(home: Path, pipelines: list[Path], env: dict[str, str], timeout: float = 120,
          overrides: dict[str, str] | None = None, preload: bool = False) -> Standalone:
    """:param overrides: environment set last (``AIRFLOW__CLARA__PAYLOAD_ROOT`` of a DICOM inbox, say).
    :param preload: ``airflow_local_settings.py`` preloads clara_airflow (``clara_airflow.preload``)."""
    dags, payload, output = home / "dags", home / "payload", home / "output"
    for folder in (dags, payload, output, home / "config"):
        folder.mkdir(parents=True, exist_ok=True)
    if preload:
        (home / "config" / "airflow_local_settings.py").write_text("from clara_airflow.preload import install\n\n"
                                                                   "install()\n")
    shutil.copy(REPO / "dags" / "clara_pipelines.py", dags)
    for pipeline in pipelines:
        shutil.copy(pipeline, dags)
    (payload / "study.txt").write_text("browser test payload\n")
    (dags / "clara-defaults.yaml").write_text(f"payload:\n  input: {payload}\n")
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
           "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "AIRFLOW__CLARA__OUTPUT_ROOT": str(output),
           "AIRFLOW__CLARA__PAYLOAD_ROOT": str(payload),
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
           "PATH": f"{bin_dir}:{env.get('PATH', os.environ['PATH'])}"}
    env.update(overrides or {})
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)
    log = open(home / "standalone.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([f"{bin_dir}/airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited; see {home / 'standalone.log'}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as answer:
                health = json.loads(answer.read())
            if all(part.get("status") in ("healthy", None) for part in health.values() if isinstance(part, dict)):
                passwords = home / "simple_auth_manager_passwords.json.generated"
                if passwords.is_file():
                    return Standalone(home, url, json.loads(passwords.read_text())["admin"], process, payload, output)
        except OSError:
            pass
        time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"airflow standalone was not healthy within {timeout} s; see {home / 'standalone.log'}")
