"""The eight corruptions as TorchIO transforms with fixed parameters, and the volume geometry.

Each ``apply_<name>(vol, geo, lv, rng, seed)`` takes a volume ``(C, X, Y, Z)`` float32 on
the CPU, already rescaled to its reference range (values mostly in [0, 1]), the
:class:`Geometry`, the severity's row of the table, a seeded ``numpy`` generator and the
derived seed; it returns the corrupted volume and the parameters it drew (JSON-ready).

Axes. MRI artefacts live in the acquisition frame: k-space is segmented along an in-plane
*phase-encoding* axis and motion is in-plane, so nothing is ever applied along the
through-plane (slice) axis (TorchIO's ``RandomMotion`` segments k-space along array axis 2,
which for axial stacks is the slice axis; here the phase axis is moved there first).
Resolution loss, in turn, acts *only* on the through-plane axis.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio

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


def apply_motion(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                 seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Motion: one sudden in-plane movement partway through the acquisition (``tio.Motion``).

    One movement (rotation about the slice axis + in-plane shift) after which
    ``round(kspace_fraction * n)`` of the n phase-encoding lines are acquired: the outer lines on
    one side of the k-space centre, never the centre line (Shaw et al. 2019, ``tio.Motion``).
    The severity sets the fraction; the nested line sets make the change grow with it (on axes
    under ~24 voxels two levels may round to the same number of lines).

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("motion", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_motion, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 8)
        >>> geo = geometry((16, 16, 8), np.diag([1.0, 1.0, 3.0, 1.0]), None)
        >>> out, drawn = apply_motion(vol, geo, level("motion", 3), np.random.default_rng(0), 0)
        >>> out.shape, drawn["moved_lines"], drawn["lines"], drawn["rotation_deg"]
        (torch.Size([1, 16, 16, 8]), 6, 16, 30.0)
        >>> drawn["phase_axis"] in geo.in_plane
        True
    """
    phase = int(geo.in_plane[rng.integers(2)])
    other = geo.in_plane[0] if phase == geo.in_plane[1] else geo.in_plane[1]
    order = (other, geo.through, phase)  # TorchIO segments k-space along the last array axis
    direction = rng.normal(size=2)
    shift = direction / (np.linalg.norm(direction) or 1.0) * lv["translation_mm"]
    rotation = float(rng.choice([-1.0, 1.0]) * lv["degrees"])
    degrees, translation = np.zeros((1, 3)), np.zeros((1, 3))
    degrees[0, 1] = rotation  # about the through-plane axis only (position 1 of `order`)
    translation[0, [0, 2]] = shift  # in-plane only
    n = int(vol.shape[phase + 1])
    # Outer lines on one side of the centre only: the centre line (index n // 2 after TorchIO's
    # fftshift) always comes from before the move. The small offset keeps int(n * time) exact.
    moved_lines = min(max(1, round(lv["kspace_fraction"] * n)), n - n // 2 - 1)
    times = np.array([(n - moved_lines) / n + 1e-9])
    # Rotation and translation are defined in the acquisition frame (voxel axes scaled by the
    # spacing), where the scanner's slice and phase axes are, not in the oblique world frame.
    frame = np.diag([geo.spacing[a] for a in order] + [1.0])
    moved = _run(tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear"),
                 vol.permute(0, *(a + 1 for a in order)).contiguous(), frame)
    out = moved.permute(0, *(order.index(a) + 1 for a in range(3))).contiguous()
    return out, {"phase_axis": phase, "moved_lines": moved_lines, "lines": n, "rotation_deg": rotation,
                 "translation_mm": {str(order[0]): float(shift[0]), str(order[2]): float(shift[1])}}


def apply_spike(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One k-space spike off-centre in-plane (herringbone stripes), same in every slice.

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("spike", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_spike, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_spike(vol, geo, level("spike", 3), np.random.default_rng(0), 0)
        >>> out.shape, drawn["position"][2]   # k-space centre along the slice axis
        (torch.Size([1, 16, 16, 16]), 0.5)
    """
    position = np.full((1, 3), 0.5)  # k-space centre along the through-plane axis
    for a in geo.in_plane:
        position[0, a] = 0.5 + rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.4)
    out = _run(tio.Spike(spikes_positions=position, intensity=lv["intensity"]), vol, geo.affine)
    return out, {"position": position[0].tolist()}


def apply_ghosting(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Periodic ghosts along an in-plane phase axis (``tio.Ghosting``).

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("ghosting", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_ghosting, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_ghosting(vol, geo, level("ghosting", 3), np.random.default_rng(0), 0)
        >>> out.shape, drawn["phase_axis"] in geo.in_plane, 4 <= drawn["num_ghosts"] <= 10
        (torch.Size([1, 16, 16, 16]), True, True)
    """
    phase, ghosts = int(geo.in_plane[rng.integers(2)]), int(rng.integers(4, 11))
    out = _run(tio.Ghosting(num_ghosts=ghosts, axis=phase, intensity=lv["intensity"], restore=0.02),
               vol, geo.affine)
    return out, {"phase_axis": phase, "num_ghosts": ghosts, "restore": 0.02}


def apply_bias_field(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                     seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Bias field: a smooth multiplicative field ``exp(p(x, y, z))`` (``tio.BiasField``).

    p is a polynomial of order 3, centred (geometric mean of the field 1) and scaled so
    max |p| = ``max_log_gain``.

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("bias_field", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_bias_field, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_bias_field(vol, geo, level("bias_field", 3), np.random.default_rng(0), 0)
        >>> round(float((out / vol).log().abs().max()), 4)   # max_log_gain at severity 3
        1.0
        >>> drawn["order"], len(drawn["coefficients"])
        (3, 20)
    """
    order = 3
    coefficients = rng.uniform(-1, 1, (order + 1) * (order + 2) * (order + 3) // 6)
    coefficients[0] = 0.0  # constant term: set below so the field is centred
    log_field = np.log(tio.BiasField.generate_bias_field(vol, order, coefficients.tolist()).astype(np.float64))
    centre = log_field.mean()
    span = float(np.abs(log_field - centre).max()) or 1.0
    coefficients = coefficients * lv["max_log_gain"] / span
    coefficients[0] = -centre * lv["max_log_gain"] / span
    out = _run(tio.BiasField(coefficients=coefficients.tolist(), order=order), vol, geo.affine)
    return out, {"order": order, "coefficients": coefficients.tolist()}


def apply_blur(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
               seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """In-plane Gaussian blur of ``sigma_voxels`` in-plane voxels (``tio.Blur``, sigma in mm).

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("blur", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_blur, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_blur(vol, geo, level("blur", 3), np.random.default_rng(0), 0)
        >>> drawn   # 1 voxel of 1 mm in-plane, none through-plane
        {'std_mm': [1.0, 1.0, 0.0]}
    """
    std = [0.0, 0.0, 0.0]
    for a in geo.in_plane:
        std[a] = lv["sigma_voxels"] * geo.spacing[a]
    return _run(tio.Blur(std=(std[0], std[1], std[2])), vol, geo.affine), {"std_mm": std}


def apply_noise(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Additive Gaussian noise, std a fraction of the reference range (``tio.Noise``, seeded).

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("noise", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; seeds TorchIO's noise.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_noise, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_noise(vol, geo, level("noise", 3), np.random.default_rng(0), 0)
        >>> round(float((out - vol).std()), 2), drawn   # std_fraction 0.06 at severity 3
        (0.06, {'noise_seed': 0})
    """
    return _run(tio.Noise(mean=0.0, std=lv["std_fraction"], seed=seed), vol, geo.affine), {"noise_seed": seed}


def apply_gamma(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Contrast change u -> u ** gamma on the rescaled image (``tio.Gamma``).

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("gamma", severity)``.
        rng: the seeded generator of the case's draws.
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_gamma, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_gamma(vol, geo, level("gamma", 3), np.random.default_rng(0), 0)
        >>> round(drawn["gamma"], 4)   # exp(+0.3) or exp(-0.3)
        1.3499
        >>> bool(torch.allclose(out, vol ** drawn["gamma"], atol=1e-5))
        True
    """
    gamma = float(np.exp(rng.choice([-1.0, 1.0]) * lv["log_gamma"]))
    return _run(tio.Gamma(gamma=gamma), vol, geo.affine), {"gamma": gamma}


def apply_resolution(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                     seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Resolution loss: slices ``factor`` times thicker along the through-plane axis (``tio.Blur``).

    Physics. A slice is the image weighted by the slice-sensitivity profile (SSP) along the
    through-plane axis; thicker slices have a wider SSP, here a Gaussian. The volume's own
    slices are taken as a Gaussian SSP of FWHM ``spacing`` (contiguous slices), so a
    Gaussian of FWHM ``spacing * sqrt(factor**2 - 1)`` along that axis makes their FWHM
    ``factor * spacing`` (FWHMs of convolved Gaussians add in quadrature). The slices stay
    on the original grid (overlapping thick slices, as a CT reconstructed at a smaller
    increment). Each cosine component along the axis is damped by ``exp(-(sigma * w)**2 / 2)``
    (``sigma = FWHM / 2.355``), so a larger factor damps every one more and the L2 change
    grows strictly with the severity, whatever the number of slices; so did the mean
    |change| on every phantom measured (2 to 20 slices, and 2D). Box-averaging down to
    ``n / factor`` slices and back did not (on 6 slices, 6 -> 3 fitted the content better
    than 6 -> 4). A single-slice (2D) image has no slice axis, so one in-plane axis (drawn)
    is blurred alike, its pixel size taken as the slice thickness.

    Args:
        vol: the volume rescaled to its reference range, float32 on the CPU.
        geo: its :class:`Geometry` (slice axis, in-plane axes, spacing).
        lv: the severity's row of the table, ``level("resolution", severity)``.
        rng: the seeded generator of the case's draws (2D: which in-plane axis).
        seed: the derived seed; unused here.

    Returns:
        (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict:
        ``axis``, ``slice_thickness_mm`` = factor * spacing, and ``fwhm_mm``, the FWHM of the
        Gaussian applied).

    Shape:
        - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
        - output: ``(C, X, Y, Z)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_resolution, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 8)
        >>> geo = geometry((16, 16, 8), np.diag([1.0, 1.0, 3.0, 1.0]), None)
        >>> out, drawn = apply_resolution(vol, geo, level("resolution", 3), np.random.default_rng(0), 0)
        >>> out.shape, drawn["axis"], drawn["slice_thickness_mm"], round(drawn["fwhm_mm"], 3)   # 3 * sqrt(3**2 - 1)
        (torch.Size([1, 16, 16, 8]), 2, 9.0, 8.485)
        >>> outs = [apply_resolution(vol, geo, level("resolution", s), np.random.default_rng(0), 0)[0]
        ...         for s in (1, 2, 3, 4, 5)]
        >>> change = [float((o - vol).abs().mean()) for o in outs]
        >>> all(a < b for a, b in zip(change, change[1:]))   # each severity changes it more
        True
    """
    axis = geo.through if vol.shape[geo.through + 1] > 1 else int(geo.in_plane[rng.integers(2)])
    spacing, factor = geo.spacing[axis], lv["factor"]
    fwhm = spacing * float(np.sqrt(max(factor ** 2 - 1.0, 0.0)))
    std = [0.0, 0.0, 0.0]
    std[axis] = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    out = _run(tio.Blur(std=(std[0], std[1], std[2])), vol, geo.affine)
    return out, {"axis": axis, "slice_thickness_mm": factor * spacing, "fwhm_mm": fwhm}


Artefact = Callable[[torch.Tensor, Geometry, dict[str, float], np.random.Generator, int],
                    tuple[torch.Tensor, dict[str, Any]]]
ARTEFACTS: dict[str, Artefact] = {"motion": apply_motion, "spike": apply_spike, "ghosting": apply_ghosting,
                                  "bias_field": apply_bias_field, "blur": apply_blur, "noise": apply_noise,
                                  "gamma": apply_gamma, "resolution": apply_resolution}
