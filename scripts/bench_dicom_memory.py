"""Peak memory of the DICOM receiver for one large instance, side by side for source trees in one run.

    .venv/bin/python scripts/bench_dicom_memory.py [--mb 1024] [--tree PATH ...]

Writes one CT instance of about ``--mb`` MiB of pixel data, sends it with ``storescu`` to a fresh
``clara-airflow dicom listen`` of each tree (default: this checkout), and prints the receiver's peak
resident memory (``VmHWM``) before and after the instance, and the ratio of the growth to the instance's
size. Each receiver has its own inbox; nothing is kept.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402 - after the path is set
from pydicom.uid import generate_uid  # noqa: E402

from tests.browser.standalone import free_port  # noqa: E402
from tests.dicom_data import ct_series  # noqa: E402

LISTEN = "import sys; from clara_airflow.cli import main; sys.exit(main(['dicom', 'listen', '--config', sys.argv[1]]))"


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmHWM for {pid}")


def measure(tree: Path, instance: Path, work: Path) -> tuple[int, int, float]:
    inbox, port = work / "inbox", free_port()
    inbox.mkdir(parents=True)
    config = work / "dicom.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port}, "inbox": str(inbox), "airflow": {"url": "http://127.0.0.1:9"},
        "ae_titles": {"BIG": {"pipelines": ["p"], "timeout": 3600}}, "min_free_disk_mb": 10,
        "sources": [{"ae_title": "MODALITY", "host": "127.0.0.1"}]}))
    log = work / "receiver.log"
    receiver = subprocess.Popen([sys.executable, "-c", LISTEN, str(config)], env={**os.environ, "PYTHONPATH": str(tree)},
                                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 30
        while "listening:" not in log.read_text():
            if time.monotonic() > deadline or receiver.poll() is not None:
                raise SystemExit(f"{tree}: the receiver did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        before = peak_kb(receiver.pid)
        began = time.perf_counter()
        sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "BIG", "127.0.0.1", str(port), str(instance)],
                              capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - began
        if sent.returncode != 0 or not list(inbox.rglob("*.dcm")):
            raise SystemExit(f"{tree}: the instance was not stored: {sent.stderr[-500:]}\n{log.read_text()[-2000:]}")
        return before, peak_kb(receiver.pid), seconds
    finally:
        receiver.terminate()
        receiver.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024, help="pixel data of the instance, MiB")
    parser.add_argument("--tree", type=Path, action="append", help="a clara-airflow source tree (repeatable)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clara-bench-memory-"))
    try:
        side = int(math.sqrt(args.mb * 2**20 / 2))
        (instance,) = ct_series(work / "instance", study=generate_uid(), series=generate_uid(), count=1, size=side)
        size_mb = instance.stat().st_size / 2**20
        print(f"one CT instance of {side} x {side} x 16 bit: {size_mb:.0f} MiB, storescu, one association")
        for n, tree in enumerate(args.tree or [REPO]):
            before, after, seconds = measure(tree.resolve(), instance, work / f"tree-{n}")
            grown = (after - before) / 1024
            print(f"{str(tree):<30} peak RSS {before / 1024:6.0f} -> {after / 1024:6.0f} MiB "
                  f"(+{grown:.0f} MiB = {grown / size_mb:.2f}x the instance) in {seconds:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
