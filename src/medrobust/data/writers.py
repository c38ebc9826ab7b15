"""Writing outputs in their source's format and geometry: NIfTI, NRRD or MHA, atomically.

Predictions, adversarial and corrupted images keep the format of the scan they came from:

==========================  ============  =============================================
source                      written as    why
==========================  ============  =============================================
NIfTI (.nii, .nii.gz)       ``.nii.gz``   nibabel, the source header copied when given
NRRD (.nrrd, .nhdr)         ``.nrrd``     SimpleITK, one file (a detached header pair
                                          could not be renamed into place atomically)
MetaImage (.mha, .mhd)      ``.mha``      SimpleITK, one file (same reason)
DICOM series, PNG/JPEG      ``.nii.gz``   writing DICOM needs UIDs and tags a derived
                                          image cannot honestly inherit
==========================  ============  =============================================

The geometry is the source's in every case: the RAS affine read by
:mod:`medrobust.data.readers` becomes spacing, origin and direction in ITK's LPS, the
inverse of the reader's conversion. :func:`output_note` says in words what was written,
for manifests.
"""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from medrobust.data.io import DataError, atomic_path, image_format, is_nifti, write_nifti
from medrobust.data.readers import read_sitk

__all__ = ["copy_image", "copy_suffix", "output_note", "output_suffix", "write_image"]

_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "metaimage": ".mha", "dicom": ".nii.gz", "image2d": ".nii.gz"}
_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "metaimage": "MetaImage", "dicom": "DICOM series", "image2d": "PNG/JPEG"}
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SELF_CONTAINED = (".nii.gz", ".nii", ".nrrd", ".mha")


def _first(source: str | Path | Sequence[str | Path]) -> str:
    return str(source if isinstance(source, (str, Path)) else source[0])


def output_suffix(source: str | Path | Sequence[str | Path]) -> str:
    """The suffix an output derived from ``source`` is written with (see the module's table).

    Args:
        source: the source image path (a list of channel files: its first file).

    Returns:
        ``".nii.gz"``, ``".nrrd"`` or ``".mha"``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "ct.mhd").write_text(""), (folder / "ct.nhdr").write_text("")
        >>> output_suffix(folder / "ct.mhd"), output_suffix([folder / "ct.nhdr"]), output_suffix(folder)
        ('.mha', '.nrrd', '.nii.gz')
    """
    return _SUFFIX[image_format(_first(source))]


def output_note(source: str | Path | Sequence[str | Path]) -> str:
    """In words, the format an output of ``source`` is written in and why (for manifests).

    Example:
        >>> import tempfile
        >>> output_note(tempfile.mkdtemp())
        'NIfTI (.nii.gz) in the source geometry; the source is a DICOM series, which is not written'
    """
    fmt = image_format(_first(source))
    written = {".nii.gz": "NIfTI", ".nrrd": "NRRD", ".mha": "MetaImage"}[_SUFFIX[fmt]]
    if fmt in ("dicom", "image2d"):
        return f"{written} (.nii.gz) in the source geometry; the source is a {_NAMES[fmt]}, which is not written"
    return f"{written} ({_SUFFIX[fmt]}), the source's format, in the source geometry"


def _sitk_image(data: np.ndarray, affine: np.ndarray, path: Path) -> sitk.Image:
    """A SimpleITK image of ``(X, Y, Z)`` or ``(C, X, Y, Z)`` data with the RAS ``affine``'s geometry."""
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim not in (3, 4):
        raise DataError(f"{path}: cannot write array of shape {data.shape}; allowed (X,Y,Z) or (C,X,Y,Z)")
    vector = data.ndim == 4
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0) if vector else (2, 1, 0))),
                                   isVector=vector)
    lps = _LPS @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    if not np.all(spacing > 0):
        raise DataError(f"{path}: affine has a zero-length axis (spacing {spacing.tolist()}); cannot write it")
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    return image


def write_image(path: str | Path, array: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor,
                header: nib.Nifti1Header | None = None, dtype: Any = np.float32) -> Path:
    """Write ``array`` with the RAS ``affine`` atomically, in the format ``path``'s suffix names.

    Args:
        path: ends in ``.nii``/``.nii.gz`` (nibabel), ``.nrrd`` or ``.mha`` (SimpleITK,
            compressed).
        array: ``(X, Y, Z)``, ``(C, X, Y, Z)`` (channels: NIfTI's 4th axis, vector
            components in NRRD/MHA) or ``(X, Y)``.
        affine: (4, 4) voxel-to-world in RAS mm, as :func:`~medrobust.data.readers.read_image`
            gives it.
        header: a NIfTI source's header to copy (NIfTI outputs only).
        dtype: the stored data type (``np.int16`` for label maps).

    Returns:
        ``path``.

    Raises:
        DataError: an unsupported suffix, array shape or affine.

    Example:
        >>> import tempfile
        >>> from medrobust.data.readers import read_image
        >>> affine = np.array([[0, -2, 0, 10], [1.5, 0, 0, -4], [0, 0, 3, 7], [0, 0, 0, 1]], dtype=float)
        >>> path = write_image(Path(tempfile.mkdtemp()) / "pred.nrrd", np.ones((2, 3, 4)), affine, dtype=np.int16)
        >>> array, meta = read_image(path)
        >>> array.shape, bool(np.allclose(meta["affine"], affine))
        ((1, 2, 3, 4), True)
    """
    path = Path(path)
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    aff = np.asarray(affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if is_nifti(path):
        return write_nifti(path, data, aff, header=header, dtype=dtype)
    if not path.name.lower().endswith((".nrrd", ".mha")):
        raise DataError(f"{path}: output must end in .nii.gz, .nii, .nrrd or .mha")
    if aff.shape != (4, 4):
        raise DataError(f"{path}: affine must be 4x4, got shape {aff.shape}")
    image = _sitk_image(data.astype(dtype), aff, path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def copy_suffix(source: str | Path) -> str:
    """The suffix :func:`copy_image` gives a copy of ``source``: its own when it is one self-contained file.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "seg.nii").write_bytes(b""), (folder / "seg.mhd").write_text("")
        >>> copy_suffix(folder / "seg.nii"), copy_suffix(folder / "seg.mhd")
        ('.nii', '.mha')
    """
    name = Path(source).name.lower()
    own = next((s for s in _SELF_CONTAINED if name.endswith(s)), None)
    return own if own is not None and Path(source).is_file() else output_suffix(source)


def copy_image(source: str | Path, dest: str | Path) -> Path:
    """Copy an image to ``dest`` (named with :func:`copy_suffix`) atomically, as one file.

    A self-contained file is copied byte for byte; a detached header (``.mhd``, ``.nhdr``)
    with its data file, or a DICOM series, is read and written in ``dest``'s format with
    its pixel type and geometry.

    Args:
        source: an image file or DICOM series folder.
        dest: the output path.

    Returns:
        ``dest``.
    """
    source, dest = Path(source), Path(dest)
    with atomic_path(dest) as tmp:
        if source.is_file() and source.name.lower().endswith(_SELF_CONTAINED):
            shutil.copyfile(source, tmp)
        else:
            sitk.WriteImage(read_sitk(source), str(tmp), True)
    return dest
