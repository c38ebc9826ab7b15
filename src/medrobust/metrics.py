"""Metrics for segmentation, classification and perturbations, computed with MONAI.

Segmentation: ``pred`` is labels ``(B, 1, *spatial)`` (int) or logits ``(B, K, *spatial)``
(argmax is taken); ``y`` is labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
Classification: ``pred`` is logits ``(B, K)`` or labels ``(B,)``; ``y`` is labels ``(B,)``.
Perturbations: ``x`` and ``x_adv`` are images ``(B, C, *spatial)`` in model units.
Per-sample results are float tensors ``(B,)`` / ``(B, K')`` on CPU; batch scores are floats.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.metrics import (
    PSNRMetric,
    SSIMMetric,
    compute_dice,
    compute_hausdorff_distance,
    compute_roc_auc,
    compute_surface_dice,
)
from monai.networks.utils import one_hot

from medrobust.units import IntensityMap

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


def _class_labels(pred: torch.Tensor) -> torch.Tensor:
    if pred.ndim == 2:
        return pred.argmax(dim=1)
    if pred.ndim == 1:
        return pred.long()
    raise ValueError(f"pred must be logits (B, K) or labels (B,), got shape {tuple(pred.shape)}")


def _check_y(y: torch.Tensor, batch: int) -> torch.Tensor:
    if y.shape != (batch,):
        raise ValueError(f"y must be class labels of shape ({batch},), got {tuple(y.shape)}")
    return y.long().cpu()


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose predicted class equals ``y``.

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.

    Returns:
        The accuracy in [0, 1] (NaN for an empty batch).

    Raises:
        ValueError: ``pred`` neither ``(B, K)`` nor ``(B,)``, or ``y`` not ``(B,)``.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import accuracy
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> accuracy(logits, y)
        0.75
    """
    labels = _class_labels(pred).cpu()
    return float((labels == _check_y(y, labels.shape[0])).double().mean())


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class.

    ``num_classes`` defaults to K of the logits, or to the largest label + 1.

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.
        num_classes: K; default as above.

    Returns:
        int64 tensor on the CPU; ``cm[i, j]`` counts samples of class i predicted as j.

    Raises:
        ValueError: bad shapes (as for :func:`accuracy`) or labels outside ``[0, K)``.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``
        - output: ``(K, K)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import confusion_matrix
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> confusion_matrix(logits, y).tolist()
        [[1, 0], [1, 2]]
    """
    # MONAI's ConfusionMatrixMetric gives per-class TP/FP/TN/FN, not the K x K table.
    labels = _class_labels(pred).cpu()
    y = _check_y(y, labels.shape[0])
    if num_classes is None:
        num_classes = pred.shape[1] if pred.ndim == 2 else int(max(labels.max(), y.max())) + 1
    if labels.numel() and (min(labels.min(), y.min()) < 0 or max(labels.max(), y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return torch.bincount(y * num_classes + labels, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y`` (``num_classes`` as for the confusion matrix).

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.
        num_classes: K; default as for :func:`confusion_matrix`.

    Returns:
        The balanced accuracy in [0, 1].

    Raises:
        ValueError: as for :func:`confusion_matrix`.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import balanced_accuracy
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> round(balanced_accuracy(logits, y), 4)   # recalls 1 and 2/3
        0.8333
    """
    cm = confusion_matrix(pred, y, num_classes).double()
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present] / support[present]).mean())


def auroc(scores: torch.Tensor, y: torch.Tensor, from_logits: bool = True) -> float:
    """Area under the ROC curve; multi-class: mean of one-vs-rest AUCs.

    Classes absent from ``y`` (or present in every sample) have no AUC and are skipped;
    NaN when no class has one.

    Args:
        scores: logits ``(B, K)`` (softmax is applied) or probabilities (``from_logits=False``).
        y: labels ``(B,)``.
        from_logits: whether ``scores`` are logits (default) or probabilities.

    Returns:
        The AUC in [0, 1], or NaN.

    Raises:
        ValueError: ``scores`` not ``(B, K)`` or ``y`` not ``(B,)``.

    Shape:
        - scores: ``(B, K)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import auroc
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> auroc(logits, y)   # every class-1 sample scores higher than the class-0 one
        1.0
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K) logits or probabilities, got shape {tuple(scores.shape)}")
    probs = (torch.softmax(scores.double(), dim=1) if from_logits else scores.double()).detach().cpu()
    y = _check_y(y, probs.shape[0])
    with warnings.catch_warnings():  # MONAI warns per class without positives or negatives
        warnings.simplefilter("ignore")
        per_class = torch.tensor(compute_roc_auc(probs, one_hot(y[:, None], probs.shape[1]), average="none"),
                                 dtype=torch.float64)
    return float(per_class.nanmean())


def _per_sample(metric: Callable[..., Any], x: torch.Tensor, x_adv: torch.Tensor,
                data_range: float | torch.Tensor) -> torch.Tensor:
    """Run a MONAI image metric per sample when data_range is per-sample, ``(B,)``."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    x, x_adv = x.detach().double().cpu(), x_adv.detach().double().cpu()
    rng = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1)
    if rng.numel() not in (1, x.shape[0]) or (rng <= 0).any():
        raise ValueError(f"data_range must be > 0, a float or one per sample, got {data_range}")
    if rng.numel() == 1:
        return metric(float(rng), reduction="none")(x_adv, x).reshape(x.shape[0])
    return torch.cat([metric(float(r), reduction="none")(x_adv[i:i + 1], x[i:i + 1]).reshape(1)
                      for i, r in enumerate(rng)])


def ssim(x: torch.Tensor, x_adv: torch.Tensor, data_range: float | torch.Tensor) -> torch.Tensor:
    """Structural similarity per sample ``(B,)`` (1 = identical), 2D or 3D, mean over channels.

    The Gaussian window is 11 voxels, or the largest odd size that fits the smallest axis.
    ``data_range``: width of the intensity range in model units (float or ``(B,)``).

    Args:
        x: clean images in model units.
        x_adv: perturbed (or corrupted) images, same shape.
        data_range: width of the intensity range (> 0), float or per-sample ``(B,)``.

    Returns:
        float32 tensor on the CPU, SSIM per sample.

    Raises:
        ValueError: shapes differ, a spatial axis is shorter than 3 voxels, or
            ``data_range`` is not > 0 with 1 or B entries.

    Shape:
        - x, x_adv: ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        - data_range: float or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import ssim
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
        >>> [round(v, 2) for v in ssim(x, x_adv, data_range=1.0).tolist()]
        [0.98, 0.99]
        >>> ssim(x, x, data_range=1.0).tolist()
        [1.0, 1.0]
    """
    side = min(11, min(x.shape[2:]))
    win = side if side % 2 else side - 1
    if win < 3:
        raise ValueError(f"ssim needs every spatial axis >= 3 voxels, got shape {tuple(x.shape)}")

    def metric(rng: float, reduction: str) -> SSIMMetric:
        return SSIMMetric(spatial_dims=x.ndim - 2, data_range=rng, win_size=win, reduction=reduction)

    return _per_sample(metric, x, x_adv, data_range).float()


def psnr(x: torch.Tensor, x_adv: torch.Tensor, data_range: float | torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample ``(B,)``; ``inf`` for identical images.

    Args:
        x: clean images in model units.
        x_adv: perturbed (or corrupted) images, same shape.
        data_range: width of the intensity range (> 0), float or per-sample ``(B,)``.

    Returns:
        float32 tensor on the CPU, PSNR per sample in dB.

    Raises:
        ValueError: shapes differ, or ``data_range`` is not > 0 with 1 or B entries.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - data_range: float or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import psnr
        >>> x = torch.zeros(2, 1, 8, 8)
        >>> [round(v, 2) for v in psnr(x, x + 0.1, data_range=1.0).tolist()]   # 10 log10(1 / 0.01)
        [20.0, 20.0]
        >>> psnr(x, x, data_range=1.0).tolist()
        [inf, inf]
    """
    return _per_sample(PSNRMetric, x, x_adv, data_range).float()


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor,
                       intensity: IntensityMap | None = None) -> dict[str, torch.Tensor]:
    """L-inf and L2 norms of ``x_adv - x`` per sample, float64 ``(B,)`` each.

    Keys ``linf_model``, ``l2_model`` (model units) and ``linf_raw``, ``l2_raw`` (raw units,
    e.g. HU, via ``intensity.model_delta_to_raw``; per-sample scales allowed). Without an
    IntensityMap the raw norms equal the model norms.

    Args:
        x: clean images in model units.
        x_adv: perturbed images, same shape.
        intensity: the IntensityMap of the data, for the raw-unit norms (optional).

    Returns:
        Dict of four float64 CPU tensors ``(B,)``: ``linf_model``, ``l2_model``,
        ``linf_raw``, ``l2_raw``.

    Raises:
        ValueError: ``x`` and ``x_adv`` differ in shape.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - output values: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import perturbation_norms
        >>> from medrobust.units import IntensityMap
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> norms = perturbation_norms(x, x + 0.02, IntensityMap.ct_window(-175, 250))
        >>> {k: round(float(v[0]), 2) for k, v in norms.items()}   # 0.02 of a 425 HU window
        {'linf_model': 0.02, 'l2_model': 0.08, 'linf_raw': 8.5, 'l2_raw': 34.0}
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    delta = (x_adv.detach().double() - x.detach().double()).reshape(x.shape[0], -1).cpu()
    linf, l2 = delta.abs().amax(dim=1), delta.norm(p=2, dim=1)
    to_raw = intensity.model_delta_to_raw if intensity is not None else (lambda v: v)
    return {"linf_model": linf, "l2_model": l2, "linf_raw": to_raw(linf), "l2_raw": to_raw(l2)}
