"""Reading every supported image through MONAI's ``LoadImage``: one array and affine per path.

Readers, and why:

- NIfTI (``.nii``, ``.nii.gz``): MONAI's ``NibabelReader`` (nibabel, as before), so arrays and
  affines are exactly nibabel's (voxel axes as stored, no reorientation).
- NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and DICOM (a folder holding one
  series, or one ``.dcm`` file): :class:`SimpleITKReader`, a MONAI ``ImageReader`` over
  SimpleITK. MONAI's own readers for these need ``itk`` (``ITKReader``; the ``itk-core`` and
  ``itk-io`` wheels alone are 81 + 28 MB), ``pydicom`` (``PydicomReader``) and ``pynrrd``
  (``NrrdReader``). SimpleITK is already installed (TorchIO needs it; now a direct
  dependency), reads all three with ITK's own IO (GDCM for DICOM), and
  :mod:`medrobust.data.writers` writes NRRD and MHA with it in the same geometry convention,
  so an output has its source's spacing, origin and direction. No new package.
- PNG/JPEG: Pillow (:func:`medrobust.data.io.read_image_2d`), as before: ``(C, H, W)``,
  identity affine.

Affines are voxel-to-world in mm in RAS (nibabel's convention; ITK's LPS is converted as
MONAI's ``ITKReader`` does), so a volume read from DICOM, NRRD or NIfTI of the same scan
gives the same array and affine. Every failure is a :class:`~medrobust.data.io.DataError`
naming the file or folder.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.config import PathLike
from monai.data.image_reader import ImageReader, NibabelReader
from monai.transforms import LoadImage
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medrobust.data.io import DataError, image_format, read_image_2d

__all__ = ["SimpleITKReader", "dicom_series_files", "read_image", "read_sitk", "sitk_geometry"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_series_files(folder: str | Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, in slice order (GDCM's sort).

    Args:
        folder: a folder holding the files of exactly one DICOM series.

    Returns:
        The series' file paths.

    Raises:
        DataError: the folder holds no DICOM series, or several (naming their UIDs).

    Example:
        >>> import tempfile
        >>> dicom_series_files(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.data.io.DataError: ...: no DICOM series in this folder; ...
    """
    folder = str(folder)
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    if not uids:
        raise DataError(f"{folder}: no DICOM series in this folder; a DICOM image is a folder holding the files "
                        "of one series")
    if len(uids) > 1:
        raise DataError(f"{folder}: holds {len(uids)} DICOM series ({', '.join(sorted(uids))}); a DICOM image is a "
                        "folder holding exactly one series, so move each series to its own folder")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uids[0]))


def read_sitk(path: str | Path) -> sitk.Image:
    """The SimpleITK image of a file, or of the one DICOM series in a folder (see :func:`dicom_series_files`)."""
    path = str(path)
    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(dicom_series_files(path))
        return reader.Execute()
    return sitk.ReadImage(path)


def sitk_geometry(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(array ``(C, X, Y, Z)`` or ``(X, Y, Z)``, RAS affine 4x4) of a SimpleITK image.

    A 2D image gains a third axis of size 1 (spacing 1 mm), as a 2D NIfTI does.

    Args:
        image: a 2D or 3D SimpleITK image, scalar or vector (channels).

    Returns:
        The array in voxel order ``(X, Y, Z)`` (channels first for a vector image) and
        the voxel-to-world affine in RAS mm.

    Raises:
        DataError: an image of more than 3 dimensions.
    """
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise DataError(f"image has {dim} dimensions; allowed: 2D or 3D (channels as vector components)")
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X[, C]) or (Y, X[, C])
    vector = image.GetNumberOfComponentsPerPixel() > 1
    array = np.moveaxis(array, -1, 0) if vector else array[None]
    array = np.swapaxes(array, 1, -1) if dim == 3 else np.swapaxes(array, 1, 2)[..., None]
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(image.GetDirection()).reshape(dim, dim)
    spacing, origin = np.ones(3), np.zeros(3)
    spacing[:dim], origin[:dim] = image.GetSpacing(), image.GetOrigin()
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction @ np.diag(spacing), origin
    return (array if vector else array[0]), LPS_TO_RAS @ lps


class SimpleITKReader(ImageReader):
    """MONAI ``ImageReader`` over SimpleITK: NRRD, MetaImage and DICOM (a folder = one series).

    Used by :func:`read_image` through ``LoadImage``; ``get_data`` gives the array in voxel
    order ``(X, Y, Z)`` (``(C, X, Y, Z)`` for a vector image) and a RAS affine, like
    MONAI's ``ITKReader`` with ``affine_lps_to_ras=True``.

    Example:
        >>> import tempfile
        >>> import numpy as np, SimpleITK as sitk
        >>> path = str(Path(tempfile.mkdtemp()) / "ct.nrrd")
        >>> image = sitk.GetImageFromArray(np.zeros((4, 3, 2), np.float32))  # (Z, Y, X)
        >>> image.SetSpacing((1.0, 2.0, 3.0))
        >>> sitk.WriteImage(image, path)
        >>> array, meta = SimpleITKReader().get_data(SimpleITKReader().read(path))
        >>> array.shape, meta["affine"].diagonal().tolist()
        ((2, 3, 4), [-1.0, -2.0, 3.0, 1.0])
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every path is a format this reader reads (NRRD, MetaImage, DICOM)."""
        try:
            return all(image_format(f) in ("nrrd", "metaimage", "dicom") for f in ensure_tuple(filename))
        except DataError:
            return False

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """One SimpleITK image per path (a folder is read as its one DICOM series)."""
        images = [read_sitk(str(p)) for p in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Array and MONAI meta dict (affine, spatial shape, channel dim) of image(s) read by :meth:`read`.

        Several images are stacked on a new first (channel) axis; they must share a grid.
        """
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for i, image in enumerate(img if isinstance(img, (list, tuple)) else [img]):  # a sitk.Image iterates its pixels
            array, affine = sitk_geometry(image)
            if i == 0:
                meta = {MetaKeys.AFFINE: affine, MetaKeys.ORIGINAL_AFFINE: affine.copy(), MetaKeys.SPACE: SpaceKeys.RAS,
                        MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[-3:]), "spacing": np.asarray(image.GetSpacing()),
                        MetaKeys.ORIGINAL_CHANNEL_DIM: 0 if array.ndim == 4 else float("nan")}
            elif array.shape != arrays[0].shape or not np.allclose(affine, np.asarray(meta[MetaKeys.AFFINE])):
                raise ValueError("images stacked as channels must share shape and affine")
            arrays.append(array)
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return (np.concatenate(arrays) if arrays[0].ndim == 4 else np.stack(arrays)), meta
        return arrays[0], meta


def _reason(err: Exception) -> str:
    """The telling line of a reader's message (SimpleITK's is many lines, the cause last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return re.sub(r"^(\[\w+\] |\w+::ERROR: (\w+\(0x[0-9a-f]+\): )?)", "", lines[-1]) if lines else ""


def _loader(fmt: str) -> tuple[LoadImage, ImageReader]:
    """A new LoadImage and its reader per read: NibabelReader keeps the file names between read and get_data."""
    reader = NibabelReader() if fmt == "nifti" else SimpleITKReader()
    return LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32), reader


def read_image(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one image (a file, or a folder holding one DICOM series) as float32, channels first.

    Args:
        path: a NIfTI, NRRD, MetaImage, DICOM or PNG/JPEG file, or a DICOM series folder.

    Returns:
        array: float32 ``(C, X, Y, Z)`` for volumes (a 2D volume gets ``Z = 1``; a 4D NIfTI's
            4th axis and vector components are channels), ``(C, H, W)`` for PNG/JPEG.
        meta: ``{"affine": (4, 4) float64 RAS voxel-to-world (mm), "spacing": (3,) mm,
            "format": see :func:`~medrobust.data.io.image_format`, "source": str path,
            "header": the nibabel header (NIfTI only)}``.

    Shape:
        - array: ``(C, *spatial)``

    Raises:
        DataError: missing path, unsupported suffix, unreadable or truncated file, a folder
            with no or several DICOM series, too many dimensions, NaN/Inf values.

    Example:
        >>> import tempfile
        >>> from medrobust.data.io import write_nifti
        >>> path = write_nifti(Path(tempfile.mkdtemp()) / "ct.nii.gz", np.ones((2, 3, 4)), np.diag([2, 2, 2, 1]))
        >>> array, meta = read_image(path)
        >>> array.shape, array.dtype, meta["spacing"], meta["format"]
        ((1, 2, 3, 4), dtype('float32'), (2.0, 2.0, 2.0), 'nifti')
    """
    path = Path(path)
    fmt = image_format(path)
    if fmt == "image2d":
        return read_image_2d(path), {"affine": np.eye(4), "spacing": (1.0, 1.0, 1.0), "format": fmt,
                                     "source": str(path)}
    if fmt != "dicom" and not path.is_file():
        raise DataError(f"{path}: not a file")
    loader, reader = _loader(fmt)
    try:
        image = loader(str(path), reader=reader)  # the reader passed again: its errors reach us unwrapped
        array = np.array(image.numpy(), dtype=np.float32)  # a copy: a memory-mapped .nii stays closed
        affine = np.asarray(image.meta[MetaKeys.AFFINE], dtype=np.float64)
    except DataError as e:  # a folder's series check, or a shape the reader refused
        if str(path) in str(e):
            raise
        raise DataError(f"{path}: {e}") from e
    except Exception as e:  # nibabel, gzip, SimpleITK and GDCM raise many types for a bad file
        what = "DICOM series" if path.is_dir() else "image"
        raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {_reason(e)}); the file is corrupt, "
                        "truncated or not in the format its name says") from e
    if array.ndim == 3:  # a 2D volume (C, X, Y): Z = 1, as read_nifti does
        array = array[..., None]
    if array.ndim != 4 or affine.shape != (4, 4):
        raise DataError(f"{path}: image has shape {tuple(array.shape)} (channels first); allowed: 2D or 3D volumes "
                        "with channels")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: image holds {int(np.isnan(array).sum())} NaN and {int(np.isinf(array).sum())} "
                        "Inf values; intensities must be finite")
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    meta: dict[str, Any] = {"affine": affine, "spacing": spacing, "format": fmt, "source": str(path)}
    if fmt == "nifti":
        meta["header"] = nib.load(str(path)).header  # header only: the data was read above
    return np.ascontiguousarray(array), meta
