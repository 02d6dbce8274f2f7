"""Synthetic DICOM for the receiver's tests, benchmark and demo: CT series made with pydicom."""

from __future__ import annotations

from pathlib import Path

_PATTERN = bytes(range(256))


def ct_series(folder: Path, *, study: str, series: str, count: int = 3, size: int = 32,
              patient: str = "CLARA-TEST", syntax: str | None = None, modality: str = "CT",
              tags: dict[str, object] | None = None) -> list[Path]:
    """Write ``count`` slices of one series (Explicit VR Little Endian, or the compressed transfer
    ``syntax``: the pixels are then one encapsulated frame, never decoded by a peer) and return their paths.
    ``modality`` CT, MR or US picks the SOP class too; ``tags`` are set on every slice (keyword: value)."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = {"CT": uid.CTImageStorage, "MR": uid.MRImageStorage, "US": uid.UltrasoundImageStorage}[modality]

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality = patient, patient, modality
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20261205", 1, n + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing, ds.SliceThickness, ds.ImagePositionPatient = [0.7, 0.7], 1.0, [0, 0, float(n)]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        raw = (_PATTERN[n % 256:] + _PATTERN[:n % 256]) * (size * size * 2 // 256 + 1)
        ds.PixelData = encapsulate([raw[:size * size * 2]]) if syntax else raw[:size * size * 2]
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
