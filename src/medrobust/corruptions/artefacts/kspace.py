"""The k-space artefacts of MRI along an in-plane phase-encoding axis: motion, spike and ghosting.

Nothing is applied along the through-plane (slice) axis: motion is in-plane, the spike is
off-centre in-plane and the same in every slice, ghosts repeat along a phase axis.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchio as tio

from medrobust.corruptions.artefacts.frame import Geometry, _run

__all__ = ["apply_motion", "apply_spike", "apply_ghosting"]


def apply_motion(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                 seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Motion: one sudden in-plane movement partway through the acquisition (``tio.Motion``).

    One movement (rotation about the slice axis + in-plane shift) after which
    ``round(kspace_fraction * n)`` of the n phase-encoding lines are acquired: the outer lines on
    one side of the k-space centre, never the centre line (Shaw et al. 2019, ``tio.Motion``).
    The severity sets the fraction; the nested line sets make the change grow with it (on axes
    under ~24 voxels two levels may round to the same number of lines).

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("motion", severity)``;
    ``seed`` is unused.

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

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("spike", severity)``;
    ``seed`` is unused.

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

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("ghosting", severity)``;
    ``seed`` is unused.

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
