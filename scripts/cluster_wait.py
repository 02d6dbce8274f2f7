"""Part of scripts/cluster.sh up: waits for the api-server and (CeleryExecutor) for both workers, then writes
.cluster/admin.json ({"username", "password", "url"}) for REST API clients."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path


def main(root: Path) -> int:
    url = os.environ["AIRFLOW__API__BASE_URL"]
    passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3) as answer:
                if json.loads(answer.read()).get("metadatabase", {}).get("status") == "healthy" and passwords.is_file():
                    break
        except OSError:
            pass
        time.sleep(1)
    else:
        print(f"the api-server did not answer within 180 s; see {root / 'logs' / 'api-server.log'}", file=sys.stderr)
        return 1
    names: list[str] = []
    ready = os.environ["AIRFLOW__CORE__EXECUTOR"] != "CeleryExecutor"  # the LocalExecutor has no workers
    while not ready and time.monotonic() < deadline:
        from airflow.providers.celery.executors.celery_executor_utils import app

        names = sorted(name for reply in app.control.ping(timeout=2) for name in reply)
        ready = len([n for n in names if n.startswith(("worker-1@", "worker-2@"))]) == 2
        if not ready:
            time.sleep(1)
    if not ready:
        print(f"workers registered: {names or 'none'}; see {root / 'logs'}/worker-*.log", file=sys.stderr)
        return 1
    admin = {"username": "admin", "password": json.loads(passwords.read_text())["admin"], "url": url}
    target = root / "admin.json"
    target.write_text(json.dumps(admin))
    target.chmod(0o600)
    print(f"[cluster] API at {url}; {os.environ['AIRFLOW__CORE__EXECUTOR']}; workers {', '.join(names) or '-'}; "
          f"credentials in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
