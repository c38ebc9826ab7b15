"""Reading and writing images: NIfTI (nibabel) and 2D PNG/JPEG (Pillow), written atomically.

This module stays light (no MONAI, no SimpleITK): it names the image formats
(:func:`image_format`) and the files an image path stands for (:func:`image_files`).
NRRD, MetaImage and DICOM series are read by :mod:`medrobust.data.readers` (through
MONAI's ``LoadImage``) and written by :mod:`medrobust.data.writers`.

Every reader raises :class:`DataError` (a ``ValueError``) whose message names the file and
the problem: missing, unreadable/corrupt (e.g. a truncated ``.nii.gz``), or holding NaN/Inf.
Every writer goes through :func:`atomic_path`, so a failure never leaves a partial file.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
DICOM_SUFFIXES = (".dcm",)
VOLUME_FORMATS = ("nifti", "nrrd", "metaimage", "dicom")
SUPPORTED = ("NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), DICOM (a folder holding one "
             "series, or a .dcm file), PNG/JPEG (.png, .jpg, .jpeg)")


class DataError(ValueError):
    """Bad input data; the message names the file (or folder) and what is wrong."""


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_image_2d(path: str | Path) -> bool:
    """Whether ``path`` names a 2D image file (PNG, JPEG, ...) by its suffix."""
    return str(path).lower().endswith(IMAGE_2D_SUFFIXES)


def image_format(path: str | Path) -> str:
    """The format of the image at ``path``, from its suffix (a folder is a DICOM series).

    Args:
        path: an image file, or a folder holding one DICOM series.

    Returns:
        ``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"`` or ``"image2d"`` (PNG/JPEG).

    Raises:
        DataError: the path does not exist, or its suffix is none of the supported ones.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "ct.nrrd").write_bytes(b""), (folder / "notes.txt").write_text("")
        >>> image_format(folder), image_format(folder / "ct.nrrd")
        ('dicom', 'nrrd')
        >>> image_format(folder / "notes.txt")
        Traceback (most recent call last):
        ...
        medrobust.data.io.DataError: .../notes.txt: unsupported image format; allowed: NIfTI (.nii, .nii.gz), ...
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    if not p.exists():
        raise DataError(f"{p}: file not found")
    name = p.name.lower()
    for fmt, suffixes in (("nifti", NIFTI_SUFFIXES), ("nrrd", NRRD_SUFFIXES), ("metaimage", METAIMAGE_SUFFIXES),
                          ("dicom", DICOM_SUFFIXES), ("image2d", IMAGE_2D_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    raise DataError(f"{p}: unsupported image format; allowed: {SUPPORTED}")


def _detached_data_file(header: Path) -> Path | None:
    """The data file a detached header (``.mhd``, ``.nhdr``) names, when it is one file beside it."""
    key = "elementdatafile" if header.suffix.lower() == ".mhd" else "data file"
    try:
        lines = header.read_text(encoding="latin-1", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition("=" if key == "elementdatafile" else ":")
        if sep and name.strip().lower() == key and value.strip() not in ("", "LOCAL", "LIST"):
            return header.parent / value.strip().split()[0]
    return None


def image_files(path: str | Path) -> list[str]:
    """The files whose content an image path stands for (what provenance records hash).

    Args:
        path: an image file or a DICOM folder.

    Returns:
        A folder's files (sorted, hidden ones left out), a detached header (``.mhd``,
        ``.nhdr``) followed by its data file when that exists, or ``[path]``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "ct.mhd").write_text("NDims = 3" + chr(10) + "ElementDataFile = ct.raw" + chr(10))
        >>> _ = (folder / "ct.raw").write_bytes(b"")
        >>> [Path(f).name for f in image_files(folder / "ct.mhd")], [Path(f).name for f in image_files(folder)]
        (['ct.mhd', 'ct.raw'], ['ct.mhd', 'ct.raw'])
    """
    p = Path(path)
    if p.is_dir():
        return [str(f) for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")]
    data = _detached_data_file(p) if p.suffix.lower() in (".mhd", ".nhdr") else None
    return [str(p)] + ([str(data)] if data is not None and data.is_file() and data != p else [])


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` on success.

    The temporary name keeps the file's suffixes (``.nii.gz`` stays ``.nii.gz``) so writers
    that pick a format from the name still work. On any exception the temporary file is
    deleted and the exception propagates; ``path`` is then untouched. Parent folders are
    created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy/torch/Path values allowed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def read_json_or_none(path: str | Path) -> Any:
    """The JSON content of ``path``, or None when it is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


def _check_finite(array: np.ndarray, path: Path) -> None:
    if not np.isfinite(array).all():
        n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        raise DataError(f"{path}: image holds {n_nan} NaN and {n_inf} Inf values; intensities must be finite")


def read_nifti(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI file.

    Returns:
        array: float32, shape ``(X, Y, Z)`` (voxel axes as stored), or ``(C, X, Y, Z)`` for a
            4D file (the 4th axis becomes the channel axis).
        meta: ``{"affine": (4, 4) float64 voxel-to-world in mm, "spacing": (sx, sy, sz) mm,
            "header": nibabel header, "source": str path}``.

    Raises:
        DataError: missing, unreadable or truncated file, more than 4 dimensions, or
            NaN/Inf values.
    """
    path = Path(path)
    _check_exists(path)
    if not is_nifti(path):
        raise DataError(f"{path}: not a NIfTI file; allowed suffixes: {', '.join(NIFTI_SUFFIXES)}")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.spatialimages.SpatialImage):  # a NIfTI suffix always loads as Nifti1/2Image
            raise TypeError(f"loaded as {type(img).__name__}, not an image with an affine")
        array = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel/gzip/zlib raise many types for a corrupt file
        raise DataError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e}); the file is corrupt or truncated") from e
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 4:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim != 3:
        raise DataError(f"{path}: NIfTI has shape {array.shape}; allowed: 2D, 3D or 4D (channels last)")
    _check_finite(array, path)
    zooms = img.header.get_zooms()
    spacing = tuple(float(z) for z in (tuple(zooms[:3]) + (1.0, 1.0))[:3])
    meta = {"affine": np.asarray(img.affine, dtype=np.float64), "spacing": spacing,
            "header": img.header, "source": str(path)}
    return np.ascontiguousarray(array, dtype=np.float32), meta


def write_nifti(path: str | Path, array: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor,
                header: nib.Nifti1Header | None = None, dtype: Any = np.float32) -> Path:
    """Write ``array`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``) as NIfTI with ``affine`` atomically.

    ``header`` (e.g. ``meta["header"]`` of the source) is copied; its data type is set to
    ``dtype`` and its qform/sform to ``affine`` so the voxel spacing follows the affine.
    Compression follows the suffix (``.nii.gz``).
    """
    path = Path(path)
    if not is_nifti(path):
        raise DataError(f"{path}: output must end in {' or '.join(NIFTI_SUFFIXES)}")
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if data.ndim == 4:
        data = np.moveaxis(data, 0, -1)
    elif data.ndim not in (2, 3):
        raise DataError(f"{path}: cannot write array of shape {data.shape}; allowed (X,Y,Z) or (C,X,Y,Z)")
    aff = np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise DataError(f"{path}: affine must be 4x4, got shape {aff.shape}")
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(data.astype(dtype), aff, header=hdr)
    img.set_data_dtype(dtype)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=1)
    if np.issubdtype(np.dtype(dtype), np.floating):
        img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def read_image_2d(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG as float32 ``(C, H, W)`` in raw pixel units (0..255 for 8-bit).

    Grey images give ``C = 1``; colour images ``C = 3`` (an alpha channel is dropped).

    Raises:
        DataError: missing, truncated or unreadable file.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here
            if im.mode in ("L", "RGB", "F") or im.mode.startswith("I"):
                arr = np.asarray(im, dtype=np.float32)
            else:  # palette, 1-bit, alpha: grey stays grey, the rest becomes RGB
                arr = np.asarray(im.convert("L" if im.mode in ("1", "LA") else "RGB"), dtype=np.float32)
    except Exception as e:  # Pillow raises OSError/SyntaxError/ValueError for damaged files
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file is corrupt or truncated") from e
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    _check_finite(arr, path)
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_png(path: str | Path, array: np.ndarray | torch.Tensor) -> Path:
    """Write a uint8-range image ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` as PNG atomically.

    Values are rounded and clipped to [0, 255].
    """
    path = Path(path)
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if data.ndim == 3:
        if data.shape[0] not in (1, 3):
            raise DataError(f"{path}: image must have 1 or 3 channels, got shape {data.shape}")
        data = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    if data.ndim not in (2, 3):
        raise DataError(f"{path}: cannot write array of shape {data.shape} as PNG")
    img = Image.fromarray(np.clip(np.rint(data), 0, 255).astype(np.uint8))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
