"""NIfTI maps of a segmentation certificate, in the case's geometry, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medrobust.certify.segmentation import SegCertificate
from medrobust.data.io import write_nifti


def case_affine(meta: dict[str, Any]) -> np.ndarray:
    """The voxel-to-world affine of a case's tensors.

    The grid the image was returned on (``grid_affine``, set after resampling or
    cropping), else the source file's ``affine``; the identity when neither is known.

    Args:
        meta: the dataset item's ``meta``.

    Returns:
        float64 ``(4, 4)``.

    Example:
        >>> import numpy as np
        >>> from medrobust.certify.outputs import case_affine
        >>> float(case_affine({"affine": 2 * np.eye(4)})[0, 0]), float(case_affine({})[0, 0])
        (2.0, 1.0)
    """
    affine = meta.get("grid_affine", meta.get("affine"))
    return np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)


def write_certificate_maps(folder: Path, stem: str, cert: SegCertificate, meta: dict[str, Any]) -> dict[str, Path]:
    """Write the certified label map and the radius map of one case.

    ``<stem>_certified.nii.gz``: int16 labels, -1 (:data:`~medrobust.certify.ABSTAIN`)
    where the smoothed segmenter abstains. ``<stem>_radius.nii.gz``: float32 certified L2
    radius per voxel in the certificate's unit (HU, raw, model or 1/255), 0 where it
    abstains. Both on the case's grid (:func:`case_affine`): the source geometry unless the
    dataset resampled the case.

    Args:
        folder: the output folder (created).
        stem: the file-name stem, already safe (see :class:`~medrobust.data.safe_names.UniqueNames`).
        cert: the case's certificate.
        meta: the dataset item's ``meta``.

    Returns:
        ``{"certified": path, "radius": path}``.

    Shape:
        - cert.labels, cert.radius: ``(*spatial)`` with 2 or 3 axes

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from medrobust.certify import SegCertificate, write_certificate_maps
        >>> from medrobust.data.io import read_nifti
        >>> cert = SegCertificate(labels=torch.tensor([[[0, -1], [1, 1]]]), radius=torch.tensor([[[2.0, 0.0], [1.0, 3.0]]]),
        ...                       n0=10, n=100, alpha=0.01, tau=None, correction="bonferroni", sigma=25.0, unit="HU",
        ...                       sigma_model=25 / 425)
        >>> paths = write_certificate_maps(Path(tempfile.mkdtemp()), "case1", cert, {})
        >>> labels, _ = read_nifti(paths["certified"])
        >>> labels.shape, float(labels.min()), paths["radius"].name
        ((1, 2, 2), -1.0, 'case1_radius.nii.gz')
    """
    affine = case_affine(meta)
    labels = cert.labels.numpy().astype(np.int16)
    radii = cert.radius.numpy().astype(np.float32)
    return {"certified": write_nifti(folder / f"{stem}_certified.nii.gz", labels, affine, dtype=np.int16),
            "radius": write_nifti(folder / f"{stem}_radius.nii.gz", radii, affine, dtype=np.float32)}
