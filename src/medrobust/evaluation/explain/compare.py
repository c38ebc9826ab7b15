"""How far an attack moves Grad-CAM: the overlap (IoU) of the top-10% voxels of two maps.

:func:`top_fraction_iou` compares two maps; :func:`explain_pair` explains a clean and an
adversarial batch in one call and compares them.
"""
from __future__ import annotations

import math

import torch

from medrobust.evaluation.explain.gradcam import GradCAMExplainer

TOP_FRACTION = 0.1


def top_fraction_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """IoU of the top ``fraction`` voxels of two maps, per sample ``(B,)`` in [0, 1].

    Each mask holds exactly ``ceil(fraction * N)`` voxels (``torch.topk``; ties are broken by
    position), so a flat map does not turn into an all-voxel mask.

    Args:
        a: maps of one kind (e.g. clean Grad-CAM).
        b: maps to compare, same shape.
        fraction: the share of voxels in each mask, in (0, 1].

    Returns:
        The IoU per sample, float32 on the CPU.

    Raises:
        ValueError: the shapes differ or ``fraction`` is outside (0, 1].

    Shape:
        - a, b: ``(B, *)``, N = the number of entries per sample
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.evaluation.explain import top_fraction_iou
        >>> a = torch.arange(10.0).reshape(1, 1, 10)
        >>> top_fraction_iou(a, a, 0.2).tolist(), top_fraction_iou(a, a.flip(-1), 0.2).tolist()
        ([1.0], [0.0])
    """
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    fa, fb = a.detach().flatten(1), b.detach().flatten(1)
    k = max(1, math.ceil(fraction * fa.shape[1]))
    ma = torch.zeros_like(fa, dtype=torch.bool).scatter_(1, fa.topk(k, dim=1).indices, True)
    mb = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, fb.topk(k, dim=1).indices, True)
    return ((ma & mb).sum(1) / (ma | mb).sum(1)).float().cpu()


def explain_pair(explainer: GradCAMExplainer, x: torch.Tensor, x_adv: torch.Tensor,
                 fraction: float = TOP_FRACTION) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean maps, adversarial maps (each for its own predicted class) and their top-fraction IoU ``(B,)``.

    Both batches go through the explainer in one call.

    Args:
        explainer: the explainer of the model.
        x: clean images.
        x_adv: adversarial images, same shape.
        fraction: the share of voxels compared by :func:`top_fraction_iou`.

    Returns:
        ``(clean maps, adversarial maps, IoU)``.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - clean maps, adversarial maps: ``(B, 1, *spatial)``
        - IoU: ``(B,)``

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> from medrobust.evaluation.explain import GradCAMExplainer, explain_pair
        >>> x = torch.rand(3, 1, 8, 8)
        >>> clean, adv, iou = explain_pair(GradCAMExplainer(net), x, x + 0.05)
        >>> clean.shape, adv.shape, iou.shape
        (torch.Size([3, 1, 8, 8]), torch.Size([3, 1, 8, 8]), torch.Size([3]))
    """
    cams = explainer(torch.cat([x, x_adv]))
    clean, adv = cams[: x.shape[0]], cams[x.shape[0]:]
    return clean, adv, top_fraction_iou(clean, adv, fraction)
