"""Cross-entropy weighted per voxel by the prediction: SegPGD and CosPGD, untargeted and targeted."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from medrobust.losses.base import _ce_map, _keep, _reduce, _target, check_labels


def segpgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SegPGD: cross-entropy weighted by correctness with a step-dependent ``λ_t``: ``(B,)``.

    Weight ``1 - λ_t`` on correctly and ``λ_t`` on wrongly classified voxels,
    ``λ_t = (t - 1) / (2T)`` (Gu et al. 2022, eq. 6).

    Early steps push the voxels still classified correctly; later steps weigh the wrong
    ones more (the only loss in ``STEP_DEPENDENT``).

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` give ``λ_t`` and raise ValueError unless ``1 <= step <= total_steps``.

    Returns:
        Weighted cross-entropy per sample, float ``(B,)``.

    Example:
        >>> import torch
        >>> from medrobust.losses import segpgd
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in segpgd(logits, y, step=1, total_steps=5).tolist()]
        [0.156, 0.1431]
        >>> [round(v, 4) for v in segpgd(logits, y, step=5, total_steps=5).tolist()]
        [0.6762, 0.7845]
    """
    check_labels(logits, y)
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"segpgd needs 1 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    lam = (step - 1) / (2 * total_steps)
    correct = (logits.detach().argmax(1) == _target(y)).to(logits.dtype)
    weight = (1 - lam) * correct + lam * (1 - correct)
    return _reduce(weight * _ce_map(logits, y), _keep(logits, ignore_mask))


def cospgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """CosPGD: cross-entropy weighted by the similarity of prediction and label: ``(B,)``.

    Per-voxel CE times the stop-gradient cosine similarity of softmax(logits) and
    one-hot(y) (Agnihotri et al. 2024).

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        Cosine-weighted cross-entropy per sample, float ``(B,)``.

    Example:
        >>> import torch
        >>> from medrobust.losses import cospgd
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in cospgd(logits, y).tolist()]
        [0.4622, 0.4029]
    """
    check_labels(logits, y)
    with torch.no_grad():
        onehot = F.one_hot(_target(y).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1)
    return _reduce(cos * _ce_map(logits, y), _keep(logits, ignore_mask))


def segpgd_targeted(logits: torch.Tensor, target: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted SegPGD: cross-entropy to the target, weighted by whether a voxel reached it: ``(B,)``.

    The targeted mirror of :func:`segpgd`: weight ``λ_t`` on voxels already at the target
    and ``1 - λ_t`` on the others, ``λ_t = (t - 1) / (2T)``, so the first steps push the
    voxels that have not reached the target yet. A targeted attack *minimises* it.
    (Negating the untargeted weights instead gives the voxels not at the target no
    gradient at t = 1.)

    Args:
        logits: raw scores, ``(B, K)`` or ``(B, K, *spatial)``.
        target: int target classes ``(B,)`` or ``(B, 1, *spatial)``.
        step: the attack iteration t (1-based).
        total_steps: the number of iterations T.
        ignore_mask: optional, nonzero where a voxel is left out.

    Returns:
        Weighted cross-entropy to the target per sample, float ``(B,)``.

    Raises:
        ValueError: as :func:`segpgd`.

    Shape:
        - logits: ``(B, K, *spatial)``; target: ``(B, 1, *spatial)``; output: ``(B,)``

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[3.0, -3.0]], [[-3.0, 3.0]]]])   # voxel 0 -> class 0, voxel 1 -> class 1
        >>> target = torch.tensor([[[[1, 1]]]])                        # voxel 1 is already at the target
        >>> ce = torch.nn.functional.cross_entropy(logits, target[:, 0], reduction="none")
        >>> bool(torch.isclose(segpgd_targeted(logits, target, step=1, total_steps=4), ce[..., 0].mean() / 2))
        True
    """
    check_labels(logits, target)
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"segpgd needs 1 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    lam = (step - 1) / (2 * total_steps)
    reached = (logits.detach().argmax(1) == _target(target)).to(logits.dtype)
    weight = lam * reached + (1 - lam) * (1 - reached)
    return _reduce(weight * _ce_map(logits, target), _keep(logits, ignore_mask))


def cospgd_targeted(logits: torch.Tensor, target: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted CosPGD: cross-entropy to the target weighted by ``1 - cos``: ``(B,)``.

    As the published CosPGD code's targeted branch: voxels whose softmax is still far from
    the target's one-hot weigh the most. A targeted attack *minimises* it.

    Args:
        logits: raw scores, ``(B, K)`` or ``(B, K, *spatial)``.
        target: int target classes ``(B,)`` or ``(B, 1, *spatial)``.
        step: unused (common signature).
        total_steps: unused.
        ignore_mask: optional, nonzero where a voxel is left out.

    Returns:
        Weighted cross-entropy to the target per sample, float ``(B,)``.

    Raises:
        ValueError: ``target`` or ``ignore_mask`` does not fit ``logits``.

    Shape:
        - logits: ``(B, K, *spatial)``; target: ``(B, 1, *spatial)``; output: ``(B,)``

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> round(float(cospgd_targeted(logits, target)), 2)        # voxel 1 at the target adds ~0
        9.0
    """
    check_labels(logits, target)
    with torch.no_grad():
        onehot = F.one_hot(_target(target).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1)
    return _reduce((1 - cos) * _ce_map(logits, target), _keep(logits, ignore_mask))
