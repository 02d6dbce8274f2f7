"""The DICOM test rig: Orthanc (Debian's package) as the hospital PACS and the receiver as a process,
both in a throw-away folder, started and stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browser.standalone import free_port
from tests.helpers import wait


@dataclass
class Orthanc:
    process: subprocess.Popen[bytes]
    dicom_port: int
    http: str

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=10) as answer:
            return json.loads(answer.read())

    def post(self, path: str, data: bytes) -> Any:
        request = urllib.request.Request(self.http + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def find_study(self, study_uid: str) -> list[Any]:
        return [m for m in self.post("/tools/lookup", study_uid.encode()) if m.get("Type") == "Study"]

    def stop(self) -> None:
        stop(self.process)


def start_orthanc(folder: Path, modalities: dict[str, list[Any]], env: dict[str, str] | None = None) -> Orthanc:
    """:param env: Orthanc's environment (``TCP_NODELAY=1`` turns Nagle's algorithm off in DCMTK)."""
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = {"Name": "PACS", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
              "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomModalities": modalities,
              "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
              "Plugins": []}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, env=env)
    orthanc = Orthanc(process, dicom_port, f"http://127.0.0.1:{http_port}")
    wait(lambda: _answers(orthanc), 30, f"Orthanc did not start; see {folder / 'orthanc.log'}")
    return orthanc


def _answers(orthanc: Orthanc) -> bool:
    try:
        return bool(orthanc.get("/system"))
    except OSError:
        return False


def start_receiver(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    cli = str(Path(sys.executable).parent / "clara-airflow")
    return subprocess.Popen([cli, "dicom", "listen", "--config", str(config)], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


