"""The volume's frame: its Geometry (slice axis, spacing, affine) and a TorchIO transform run in it.

:func:`geometry` finds the through-plane (slice) axis of a volume ``(C, X, Y, Z)`` from its
affine (declared, single slice, largest spacing, or the last axis); every artefact runs its
TorchIO transform on the volume with that affine (:func:`_run`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio

__all__ = ["ISOTROPY_TOLERANCE", "Geometry", "geometry"]

ISOTROPY_TOLERANCE = 1.1  # spacings within 10% count as isotropic


@dataclass(frozen=True)
class Geometry:
    """Where the slice axis lies in a volume ``(C, X, Y, Z)`` (2D images: Z of size 1).

    Attributes:
        affine: (4, 4) voxel-to-world (mm) of the volume (the case's real affine).
        spacing: voxel size (mm) along X, Y, Z.
        through: the through-plane axis (0, 1 or 2); ``in_plane`` the two others.
        reason: why that axis ("declared", "single slice", "largest spacing", "isotropic").

    Example:
        >>> from medrobust.corruptions.artefacts import Geometry, geometry
        >>> geo = geometry((16, 16, 8), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]], None)
        >>> isinstance(geo, Geometry), geo.spacing, geo.through, geo.in_plane, geo.reason
        (True, (1.0, 1.0, 3.0), 2, (0, 1), 'largest spacing')
    """

    affine: np.ndarray
    spacing: tuple[float, float, float]
    through: int
    in_plane: tuple[int, int]
    reason: str


def geometry(shape: tuple[int, int, int], affine: Any, through_plane: int | None) -> Geometry:
    """Geometry of a volume of spatial ``shape`` (X, Y, Z) with ``affine`` (None: 1 mm identity).

    The through-plane axis is ``through_plane`` when given, else an axis of size 1, else the
    axis of largest spacing when the voxels are anisotropic (spacings differ by more than
    ``ISOTROPY_TOLERANCE``), else the last axis.

    Args:
        shape: the spatial shape (X, Y, Z) of the volume (2D images: Z = 1).
        affine: (4, 4) voxel-to-world matrix in mm (tensor, array or nested list), or None.
        through_plane: the declared slice axis (0, 1 or 2), or None to infer it.

    Returns:
        The :class:`Geometry`.

    Raises:
        ValueError: ``affine`` not a finite 4x4 matrix, a zero spacing, or
            ``through_plane`` not 0, 1 or 2.

    Example:
        >>> import numpy as np
        >>> from medrobust.corruptions.artefacts import geometry
        >>> geometry((16, 16, 16), None, None).reason
        'isotropic voxels: last axis'
        >>> geometry((16, 16, 8), np.diag([0.8, 0.8, 4.0, 1.0]), None).through
        2
        >>> geometry((16, 16, 16), None, through_plane=0).in_plane
        (1, 2)
    """
    aff = np.eye(4) if affine is None else np.asarray(
        affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise ValueError(f"affine: expected a finite 4x4 voxel-to-world matrix, got shape {aff.shape}")
    spacing = tuple(float(s) for s in np.linalg.norm(aff[:3, :3], axis=0))
    if min(spacing) <= 0:
        raise ValueError(f"affine: voxel spacing must be > 0 along every axis, got {spacing}")
    if through_plane is not None:
        if through_plane not in (0, 1, 2) or isinstance(through_plane, bool):
            raise ValueError(f"through_plane: must be a spatial axis 0, 1 or 2 of a 3D image, got {through_plane!r}")
        axis, reason = int(through_plane), "declared"
    elif 1 in shape:
        axis, reason = shape.index(1), "single slice"
    elif max(spacing) > ISOTROPY_TOLERANCE * min(spacing):
        axis, reason = int(np.argmax(spacing)), "largest spacing"
    else:
        axis, reason = 2, "isotropic voxels: last axis"
    in_plane = tuple(a for a in range(3) if a != axis)
    return Geometry(aff, spacing, axis, in_plane, reason)  # type: ignore[arg-type]


def _run(transform: tio.Transform, vol: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    return transform(tio.ScalarImage(tensor=vol, affine=affine)).data.float()
