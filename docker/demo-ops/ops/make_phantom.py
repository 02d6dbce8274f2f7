"""Writes a synthetic chest CT series (DICOM, one file per slice) into the folder given as argument.

A body ellipse of soft tissue (40 HU), two aerated lungs (-850 HU), a spine and ribs of bone (700 HU)
and a little noise: enough for the demo's threshold models to find lungs and bone.
"""

import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SIZE, SLICES, SPACING, THICKNESS = 96, 24, 3.5, 5.0


def phantom() -> np.ndarray:
    z, y, x = np.mgrid[0:SLICES, 0:SIZE, 0:SIZE].astype(np.float32)
    c = SIZE / 2
    hu = np.full((SLICES, SIZE, SIZE), -1000.0, dtype=np.float32)
    body = ((x - c) / 40) ** 2 + ((y - c) / 30) ** 2 <= 1
    hu[body] = 40
    for side in (-1, 1):
        lung = ((x - c - side * 18) / 13) ** 2 + ((y - c + 2) / 20) ** 2 + ((z - SLICES / 2) / 14) ** 2 <= 1
        hu[lung] = -850
    spine = ((x - c) / 6) ** 2 + ((y - c - 22) / 6) ** 2 <= 1
    hu[spine] = 700
    ribs = body & (((x - c) / 40) ** 2 + ((y - c) / 30) ** 2 >= 0.82) & (z.astype(int) % 4 == 0)
    hu[ribs] = 700
    rng = np.random.default_rng(7)
    return hu + rng.normal(0, 15, hu.shape).astype(np.float32)


def write_series(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for index, plane in enumerate(phantom()):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "PHANTOM^CHEST", "CLARA-DEMO-001"
        ds.SeriesDescription = "Synthetic chest CT (clara-airflow demo)"
        ds.InstanceNumber, ds.ImagePositionPatient = index + 1, [0, 0, index * THICKNESS]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING, SPACING], THICKNESS
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.clip(plane + 1024, 0, 4095)).astype(np.int16).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(folder / f"slice-{index + 1:03d}.dcm", write_like_original=False)
    print(f"wrote {SLICES} DICOM slices of {SIZE}x{SIZE} to {folder}")


if __name__ == "__main__":
    write_series(Path(sys.argv[1]))
