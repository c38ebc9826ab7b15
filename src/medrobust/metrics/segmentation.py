"""Segmentation metrics per sample and class: Dice, HD95 and normalised surface Dice (in mm), with MONAI.

``pred`` is labels ``(B, 1, *spatial)`` (int) or logits ``(B, K, *spatial)`` (argmax is
taken); ``y`` is labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from monai.networks.utils import one_hot

Spacing = float | Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


def _seg_labels(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if y.ndim < 3 or y.shape[1] != 1:
        raise ValueError(f"y must be segmentation labels (B, 1, *spatial), got shape {tuple(y.shape)}")
    if pred.shape[1] == num_classes and num_classes > 1:
        pred = pred.argmax(dim=1, keepdim=True)
    elif pred.shape[1] != 1:
        raise ValueError(f"pred (the model's output) must be labels (B, 1, *spatial) or logits with one channel per "
                         f"class (B, {num_classes}, *spatial), got shape {tuple(pred.shape)}: do the model's output "
                         f"channels match its {num_classes} classes (model.json `classes`)?")
    if pred.shape != y.shape:
        raise ValueError(f"pred labels {tuple(pred.shape)} and y {tuple(y.shape)} differ in shape")
    for name, t in (("pred", pred), ("y", y)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {int(t.min())}, max {int(t.max())}")
    return one_hot(pred.long().cpu(), num_classes), one_hot(y.long().cpu(), num_classes)


def dice_per_class(pred: torch.Tensor, y: torch.Tensor, num_classes: int,
                   include_background: bool = False) -> torch.Tensor:
    """Dice per sample and class, ``(B, K')`` in [0, 1].

    Background (class 0) is **excluded** by default (``K' = K - 1``); pass
    ``include_background=True`` to keep it. A class absent from both prediction and
    label scores 1.0 (nothing to find, nothing found); absent from the label only, 0.0.

    Args:
        pred: predicted labels ``(B, 1, *spatial)`` or logits ``(B, K, *spatial)``.
        y: true labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
        num_classes: K, background included.
        include_background: keep class 0 (default False).

    Returns:
        float32 tensor on the CPU, one Dice per sample and class.

    Raises:
        ValueError: ``y`` not ``(B, 1, *spatial)``, ``pred`` neither labels nor K-class
            logits of ``y``'s shape, or labels outside ``[0, num_classes)``.

    Shape:
        - pred: ``(B, 1, *spatial)`` or ``(B, K, *spatial)``
        - y: ``(B, 1, *spatial)``
        - output: ``(B, K - 1)``, or ``(B, K)`` with ``include_background=True``

    Example:
        >>> import torch
        >>> from medrobust.metrics import dice_per_class
        >>> y = torch.zeros(1, 1, 8, 8, dtype=torch.long)
        >>> y[..., 2:6, 2:6] = 1                      # a 4x4 square of class 1
        >>> pred = torch.zeros_like(y)
        >>> pred[..., 2:6, 3:7] = 1                   # the same square, one voxel to the right
        >>> dice_per_class(pred, y, num_classes=2).tolist()
        [[0.75]]
        >>> [round(v, 4) for v in dice_per_class(pred, y, 2, include_background=True)[0].tolist()]
        [0.9167, 0.75]
    """
    p, t = _seg_labels(pred, y, num_classes)
    return compute_dice(p, t, include_background=include_background, ignore_empty=False).float()


def _spacing_arg(spacing: Spacing) -> float | list:
    if isinstance(spacing, torch.Tensor):
        return spacing.item() if spacing.ndim == 0 else spacing.double().cpu().tolist()
    return spacing if isinstance(spacing, (int, float)) else [list(s) if isinstance(s, Sequence) else s
                                                              for s in spacing]


def hd95(pred: torch.Tensor, y: torch.Tensor, num_classes: int, spacing: Spacing,
         include_background: bool = False) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance in millimetres, ``(B, K')``.

    NaN where the class is empty in the prediction or in the label (undefined distance).

    Args:
        pred: predicted labels ``(B, 1, *spatial)`` or logits ``(B, K, *spatial)``.
        y: true labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
        num_classes: K, background included.
        spacing: voxel size in mm: one float, one value per spatial axis, or per sample
            ``(B, n_spatial)`` (list or tensor).
        include_background: keep class 0 (default False, as for Dice).

    Returns:
        float32 tensor on the CPU, the distance in mm per sample and class (NaN where
        undefined).

    Raises:
        ValueError: label shapes or values as for :func:`dice_per_class`.

    Shape:
        - pred: ``(B, 1, *spatial)`` or ``(B, K, *spatial)``
        - y: ``(B, 1, *spatial)``
        - spacing: float, ``(n_spatial,)`` or ``(B, n_spatial)``
        - output: ``(B, K - 1)``, or ``(B, K)`` with ``include_background=True``

    Example:
        >>> import torch
        >>> from medrobust.metrics import hd95
        >>> y = torch.zeros(1, 1, 8, 8, dtype=torch.long)
        >>> y[..., 2:6, 2:6] = 1                      # a 4x4 square of class 1
        >>> pred = torch.zeros_like(y)
        >>> pred[..., 2:6, 3:7] = 1                   # the same square, one voxel to the right
        >>> hd95(pred, y, num_classes=2, spacing=(0.5, 0.5)).tolist()   # 1 voxel = 0.5 mm
        [[0.5]]
        >>> hd95(torch.zeros_like(y), y, num_classes=2, spacing=1.0).isnan().tolist()
        [[True]]
    """
    p, t = _seg_labels(pred, y, num_classes)
    with warnings.catch_warnings():  # MONAI warns for every empty class; NaN says the same
        warnings.simplefilter("ignore")
        out = compute_hausdorff_distance(p, t, include_background=include_background, percentile=95,
                                         spacing=_spacing_arg(spacing))
    return out.float()


def surface_dice(pred: torch.Tensor, y: torch.Tensor, num_classes: int, tolerance_mm: float, spacing: Spacing,
                 include_background: bool = False) -> torch.Tensor:
    """Normalised surface Dice per sample and class (MONAI's ``compute_surface_dice``), ``(B, K')``.

    The fraction of both boundaries within ``tolerance_mm`` of the other (Nikolov et al.
    2021). NaN where a class is absent from both prediction and label; 0 where it is absent
    from one of them.

    Args:
        pred: predicted labels ``(B, 1, *spatial)`` or logits ``(B, K, *spatial)``.
        y: true labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
        num_classes: K, background included.
        tolerance_mm: the accepted boundary deviation in mm (> 0), the same for every class.
        spacing: voxel size in mm: one float, one value per spatial axis, or per sample.
        include_background: keep class 0 (default False, as for Dice).

    Returns:
        float32 tensor on the CPU, ``(B, K - 1)`` (or ``(B, K)`` with the background).

    Raises:
        ValueError: ``tolerance_mm`` not > 0, or labels as for :func:`dice_per_class`.

    Shape:
        - pred: ``(B, 1, *spatial)`` or ``(B, K, *spatial)``; y: ``(B, 1, *spatial)``
        - output: ``(B, K - 1)``, or ``(B, K)`` with ``include_background=True``

    Example:
        >>> import torch
        >>> y = torch.zeros(1, 1, 8, 8, dtype=torch.long); y[..., 2:6, 2:6] = 1
        >>> shifted = torch.roll(y, 1, dims=-1)
        >>> surface_dice(y, y, 2, 1.0, 1.0).tolist(), surface_dice(shifted, y, 2, 1.0, 1.0).tolist()
        ([[1.0]], [[1.0]])
        >>> round(float(surface_dice(shifted, y, 2, 0.5, 1.0)), 3)
        0.5
    """
    if not tolerance_mm > 0:
        raise ValueError(f"tolerance_mm must be > 0, got {tolerance_mm}")
    p, t = _seg_labels(pred, y, num_classes)
    n = num_classes if include_background else num_classes - 1
    with warnings.catch_warnings():  # MONAI warns for every empty class; NaN says the same
        warnings.simplefilter("ignore")
        out = compute_surface_dice(p, t, [float(tolerance_mm)] * n, include_background=include_background,
                                   spacing=_spacing_arg(spacing))
    return out.float()
