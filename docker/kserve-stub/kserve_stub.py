"""A small KServe v2 (Triton HTTP) inference server for tests and the demo; standard library + NumPy.

Models are the sub-folders of --model-repository, each with a config.json: ``{"kind": "identity"}``
(every input doubled) or ``{"kind": "threshold", "low": L, "high": H}`` (1 where L <= x <= H, else 0).
Environment: PORT (8000), GRPC_PORT (8001, accepts TCP only), READY_DELAY_S (0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

STARTED = time.monotonic()
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "INT16": np.int16}
MODEL_PATH = re.compile(r"^/v2/models/([A-Za-z0-9_.-]+)(?:/versions/[0-9]+)?(/ready|/infer)?$")


def load_models(repository: str) -> dict:
    models = {}
    for folder in sorted(Path(repository).glob("*")):
        config = folder / "config.json"
        if folder.is_dir():
            models[folder.name] = json.loads(config.read_text()) if config.is_file() else {"kind": "identity"}
    return models


class Handler(BaseHTTPRequestHandler):
    server_version = "clara-kserve-stub/1"
    models: dict = {}
    ready_delay = 0.0

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def reply(self, code: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def ready(self) -> bool:
        return time.monotonic() - STARTED >= self.ready_delay

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v2/health/live":
            return self.reply(200)
        if self.path == "/v2/health/ready":
            return self.reply(200 if self.ready() else 503)
        if self.path == "/v2":
            return self.reply(200, {"name": "clara-kserve-stub", "version": "1", "extensions": []})
        match = MODEL_PATH.match(self.path)
        if not match or match.group(1) not in self.models:
            return self.reply(404, {"error": f"unknown model or path {self.path}"})
        if match.group(2) == "/ready":
            return self.reply(200 if self.ready() else 503)
        return self.reply(200, {"name": match.group(1), "versions": ["1"], "platform": "stub",
                                "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
                                "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]})

    def do_POST(self) -> None:  # noqa: N802
        match = MODEL_PATH.match(self.path)
        if not match or match.group(2) != "/infer" or match.group(1) not in self.models:
            return self.reply(404, {"error": f"unknown model or path {self.path}"})
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            outputs = [infer(self.models[match.group(1)], i, n) for n, i in enumerate(request["inputs"])]
        except (KeyError, ValueError, TypeError) as exc:
            return self.reply(400, {"error": f"bad inference request: {exc}"})
        body = {"model_name": match.group(1), "model_version": "1", "outputs": outputs}
        if "id" in request:
            body["id"] = request["id"]
        return self.reply(200, body)


def infer(config: dict, tensor: dict, index: int) -> dict:
    data = np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
    if config.get("kind") == "threshold":
        result = ((data >= config["low"]) & (data <= config["high"])).astype(np.uint8)
        datatype = "UINT8"
    else:
        result, datatype = (data * 2).astype(np.float32), "FP32"
    return {"name": f"OUTPUT{index}", "datatype": datatype, "shape": list(result.shape),
            "data": result.ravel().tolist()}


def accept_grpc(port: int) -> None:
    """The gRPC port only accepts TCP connections (enough for readiness checks)."""
    sock = socket.create_server(("0.0.0.0", port))
    while True:
        conn, _ = sock.accept()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-repository", default=os.environ.get("MODEL_REPOSITORY", "/opt/models"))
    parser.add_argument("--model-control-mode", default="none")
    args, _ = parser.parse_known_args()
    Handler.models = load_models(args.model_repository)
    Handler.ready_delay = float(os.environ.get("READY_DELAY_S", "0"))
    threading.Thread(target=accept_grpc, args=(int(os.environ.get("GRPC_PORT", "8001")),), daemon=True).start()
    port = int(os.environ.get("PORT", "8000"))
    print(f"serving models {sorted(Handler.models)} from {args.model_repository} on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
