"""Test helpers: a small scan in NIfTI, and the same scan as a DICOM series and as NRRD/MHA (offline, SimpleITK)."""
from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def oblique_affine() -> np.ndarray:
    """RAS affine rotated 30 degrees about z, anisotropic spacing, origin away from 0."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 2.0, 2.5])
    aff[:3, 3] = [-20.0, 10.0, 5.0]
    return aff


def _ds(values: tuple[float, ...]) -> str:
    """A DICOM decimal-string list (each value at most 16 characters)."""
    return "\\".join(f"{v:.9g}" for v in values)


def write_dicom_series(nifti: Path, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.7.1",
                       first_instance: int = 0) -> Path:
    """Write the integer-valued NIfTI volume ``nifti`` as a CT DICOM series (int16), one file per slice."""
    image = sitk.Cast(sitk.ReadImage(str(nifti)), sitk.sitkInt16)
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        tags = {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
                "0020|000e": series_uid, "0008|0018": f"{series_uid}.{first_instance + z + 1}",
                "0020|0013": str(z + 1), "0020|0037": _ds((d[0], d[3], d[6], d[1], d[4], d[7])),
                "0020|0032": _ds(image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0028|0030": _ds((image.GetSpacing()[1], image.GetSpacing()[0])),
                "0018|0050": _ds((image.GetSpacing()[2],))}
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{first_instance + z:03d}.dcm"))
        saved = locale.setlocale(locale.LC_ALL)
        try:
            writer.Execute(slice_)
        finally:  # GDCM's DICOM writer leaves the process in the C locale (ASCII text I/O for later tests)
            locale.setlocale(locale.LC_ALL, saved)
    return folder


def write_like(nifti: Path, out: Path) -> Path:
    """The NIfTI volume ``nifti`` converted to ``out``'s format (``.nrrd``, ``.mha``) by SimpleITK."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(out), True)
    return out
