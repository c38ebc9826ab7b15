"""Logit-margin losses: the margin (largest other logit minus the label's) and DLR (Croce & Hein 2020)."""
from __future__ import annotations

import torch

from medrobust.losses.base import _keep, _reduce, _target, check_labels


def _true_and_other(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit of the label class and the largest other logit, each (B,) or (B, *spatial)."""
    idx = _target(y).long().unsqueeze(1)
    z_true = logits.gather(1, idx)
    z_other = logits.scatter(1, idx, float("-inf")).amax(1)
    return z_true[:, 0], z_other


def margin(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Largest other logit minus the label's logit (> 0: misclassified), voxel mean: ``(B,)``.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        The margin per sample, float ``(B,)``, in logit units.

    Example:
        >>> import torch
        >>> from medrobust.losses import margin
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
        >>> margin(logits, torch.tensor([0, 1])).tolist()   # right by 2, wrong by 2
        [-2.0, 2.0]
    """
    check_labels(logits, y)
    z_true, z_other = _true_and_other(logits, y)
    return _reduce(z_other - z_true, _keep(logits, ignore_mask))


def dlr(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
        ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), mean per sample: ``(B,)``.

    ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3 + 1e-12)``, per voxel for segmentation.

    Needs K >= 3 logits (z_π3 is the third largest); with K = 2 it falls back to
    :func:`margin`, the unnormalised numerator, since there is no third logit to scale by.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        The DLR loss per sample, float ``(B,)``; invariant to shifting and scaling the
        logits.

    Example:
        >>> import torch
        >>> from medrobust.losses import dlr
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
        >>> [round(v, 4) for v in dlr(logits, torch.tensor([0, 1])).tolist()]
        [-0.6667, 0.6667]
        >>> [round(v, 4) for v in dlr(10 * logits + 5, torch.tensor([0, 1])).tolist()]
        [-0.6667, 0.6667]
    """
    check_labels(logits, y)
    if logits.shape[1] < 3:
        return margin(logits, y, ignore_mask=ignore_mask)
    z_true, z_other = _true_and_other(logits, y)
    top = logits.topk(3, dim=1).values
    ratio = -(z_true - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
    return _reduce(ratio, _keep(logits, ignore_mask))
