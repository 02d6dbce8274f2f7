"""Clara operator: segments /input/volume.npy with a model on the shared inference service.

The service address comes from NVIDIA_CLARA_TRTISURI (host:port, as Clara gives it); the model name
from --model. Writes /output/mask.nii.gz and /output/stats.json.
"""

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--label", required=True)
args = parser.parse_args()
uri = os.environ["NVIDIA_CLARA_TRTISURI"]
source, target = Path("/input"), Path("/output")
volume = np.load(source / "volume.npy")
meta = json.loads((source / "meta.json").read_text())
body = json.dumps({"id": args.label, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(volume.shape),
                                                  "data": volume.ravel().round(1).tolist()}]}).encode()
began = time.monotonic()
request = urllib.request.Request(f"http://{uri}/v2/models/{args.model}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=120) as answer:
    result = json.loads(answer.read())
mask = np.asarray(result["outputs"][0]["data"], dtype=np.uint8).reshape(result["outputs"][0]["shape"])
dz, dy, dx = meta["spacing_mm"]
nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), np.diag([dx, dy, dz, 1.0])), target / "mask.nii.gz")
stats = {"label": args.label, "model": args.model, "service": uri, "voxels": int(mask.sum()),
         "volume_ml": round(float(mask.sum()) * dx * dy * dz / 1000.0, 1),
         "inference_seconds": round(time.monotonic() - began, 3)}
(target / "stats.json").write_text(json.dumps(stats, indent=2))
print(f"{args.label}: {stats['voxels']} voxels, {stats['volume_ml']} mL via {uri} ({args.model})")
