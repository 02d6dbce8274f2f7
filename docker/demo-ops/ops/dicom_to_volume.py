"""Clara operator: the payload's DICOM series (/input) -> /output/volume.npy (HU) and meta.json."""

import json
import os
from pathlib import Path

import numpy as np
import pydicom

source, target = Path(os.environ.get("INPUT_DIR", "/input")), Path(os.environ.get("OUTPUT_DIR", "/output"))
slices = sorted((pydicom.dcmread(p) for p in source.rglob("*.dcm")), key=lambda d: int(d.InstanceNumber))
if not slices:
    raise SystemExit(f"no DICOM files (*.dcm) in {source}")
volume = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in slices])
np.save(target / "volume.npy", volume)
first = slices[0]
meta = {"series_uid": str(first.SeriesInstanceUID), "patient_id": str(first.PatientID),
        "shape": list(volume.shape), "spacing_mm": [float(first.SliceThickness), *map(float, first.PixelSpacing)]}
(target / "meta.json").write_text(json.dumps(meta, indent=2))
print(f"read {len(slices)} slices -> volume {volume.shape}, HU {volume.min():.0f}..{volume.max():.0f}")
