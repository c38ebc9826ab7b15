"""The patch and ROI a segmentation network trains and validates with, chosen from the data when not given.

As nnU-Net does: every side a multiple of the network's total stride (so the down- and
up-sampling paths meet), no larger than the smallest volume (so every validation case
either goes whole or through the sliding window, which pads and crops back), within a voxel
budget that fits memory. Volumes that already suit the network (one shape, sides divisible
by the stride, within the budget) keep the old behaviour: whole volumes, no ROI.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Shape = tuple[int, ...]
# Largest patch in voxels: nnU-Net's typical 3D patch (128^3) and a 512x512 slice.
VOXEL_BUDGET = {2: 512 * 512, 3: 128 ** 3}


@dataclass(frozen=True)
class SizeChoice:
    """The sizes a run uses; None means whole volumes.

    Attributes:
        roi_size: the window of validation and of the checkpoint (``model.json``'s ``roi_size``).
        patch_size: the size training cases are padded/cropped to.
        chosen: whether medrobust chose them (no ``--roi-size`` / ``--patch-size`` given).
        reason: why, in words (printed and kept in ``model.json``).
    """

    roi_size: Shape | None
    patch_size: Shape | None
    chosen: bool
    reason: str


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _divisible(shape: Shape, stride: Shape) -> bool:
    return all(n % s == 0 for n, s in zip(shape, stride))


def _auto_roi(smallest: Shape, stride: Shape, budget: int) -> Shape:
    """Sides rounded down to the stride (at least one stride), the largest shrunk until within ``budget``."""
    roi = [max(s, n // s * s) for n, s in zip(smallest, stride)]
    while math.prod(roi) > budget:
        axis = max((k for k in range(len(roi)) if roi[k] > stride[k]), key=lambda k: roi[k], default=None)
        if axis is None:
            break
        roi[axis] -= stride[axis]
    return tuple(roi)


def _check(size: Shape, stride: Shape, flag: str) -> None:
    if not _divisible(size, stride):
        fixed = tuple(max(s, n // s * s) for n, s in zip(size, stride))
        raise ValueError(f"{flag}: {_fmt(size)} is not divisible by the network's total stride {_fmt(stride)}; "
                         f"use e.g. {','.join(map(str, fixed))}")


def choose_sizes(train_shapes: Mapping[str, Shape], val_shapes: Mapping[str, Shape], stride: Shape | None,
                 roi_size: Shape | None = None, patch_size: Shape | None = None) -> SizeChoice:
    """The ROI and training patch of a segmentation run (see the module docstring).

    Args:
        train_shapes: spatial shape of each training case, keyed by its image file.
        val_shapes: the same for the validation cases (fed whole or windowed).
        stride: the network's total stride per axis (``network_stride``); None: no constraint.
        roi_size: ``--roi-size`` if given.
        patch_size: ``--patch-size`` if given.

    Returns:
        The :class:`SizeChoice`.

    Raises:
        ValueError: a given size that the stride does not divide (naming its flag), or a
            validation volume that would go to the network whole with sides it cannot take
            (naming the file and ``--roi-size``).

    Example:
        >>> choice = choose_sizes({"a.nii.gz": (90, 108, 90)}, {"b.nii.gz": (91, 110, 90)}, (8, 8, 8))
        >>> choice.roi_size, choice.patch_size
        ((88, 104, 88), (88, 104, 88))
        >>> choose_sizes({"a.nii.gz": (16, 16, 16)}, {"b.nii.gz": (16, 16, 16)}, (8, 8, 8)).roi_size is None
        True
    """
    shapes = {**train_shapes, **val_shapes}
    dims = len(next(iter(shapes.values())))
    step = stride or (1,) * dims
    budget = VOXEL_BUDGET.get(dims, 128 ** 3)
    suits = all(_divisible(s, step) and math.prod(s) <= budget for s in shapes.values())
    one_shape = len(set(train_shapes.values())) == 1
    for size, flag in ((patch_size, "--patch-size"), (roi_size, "--roi-size")):
        if size is not None and len(size) != dims:
            raise ValueError(f"{flag}: {_fmt(tuple(size))} has {len(size)} sizes, the volumes have {dims} axes "
                             f"(e.g. {','.join(['64'] * dims)})")
    roi, patch, chosen, reason = roi_size, patch_size, False, "given"
    if roi is None and patch is None and not (suits and one_shape):
        smallest = tuple(min(s[k] for s in shapes.values()) for k in range(dims))
        roi = patch = _auto_roi(smallest, step, budget)
        chosen = True
        reason = (f"chosen from the data: smallest volume {_fmt(smallest)} rounded down to the network's total "
                  f"stride {_fmt(step)}, at most {budget} voxels")
    elif roi is None and patch is not None and not suits:
        roi = patch  # validation windows the volumes the network cannot take whole
    if patch is None and roi is not None and not (suits and one_shape):
        patch = roi
    for size, flag in ((patch, "--patch-size"), (roi, "--roi-size")):
        if size is not None:
            _check(size, step, flag)
    for path, shape in val_shapes.items():
        whole = roi is None or all(n <= r for n, r in zip(shape, roi))
        if whole and not _divisible(shape, step):
            raise ValueError(f"--roi-size: {path}: a {_fmt(shape)} volume goes to the network whole (ROI "
                             f"{_fmt(roi) if roi else 'none'}), but the network's total stride {_fmt(step)} does not "
                             "divide its sides; give a smaller --roi-size or pad the volume")
    return SizeChoice(roi, patch, chosen, reason)
