"""Clara operator: the lung mask burnt into a copy of the CT series (/input + /seg-lung/mask.nii.gz) ->
/output/*.dcm, a new series in the same study (what a PACS shows next to the original). For the demo
only: not for diagnosis."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import generate_uid

source, target = Path(os.environ.get("INPUT_DIR", "/input")), Path(os.environ.get("OUTPUT_DIR", "/output"))
slices = sorted((pydicom.dcmread(p) for p in source.rglob("*.dcm")), key=lambda d: int(d.InstanceNumber))
mask = np.asarray(nib.load("/seg-lung/mask.nii.gz").dataobj).transpose(2, 1, 0)  # back to (slice, row, column)
series = generate_uid()
for index, ds in enumerate(slices):
    pixels = ds.pixel_array.copy()
    pixels[mask[index] > 0] = pixels.max()  # the mask shows as the brightest value
    ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
    ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription, ds.SeriesNumber = "CLARA AI lung mask (demo, not for diagnosis)", 900
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.save_as(target / f"{index:04d}.dcm")  # read from a file, so written as one (preamble and meta)
print(f"wrote {len(slices)} slices of series {series} with the lung mask")
