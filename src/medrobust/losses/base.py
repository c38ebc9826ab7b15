"""What every loss is: the ``LossFn`` protocol, its label check and the per-voxel helpers every loss reduces with."""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class LossFn(Protocol):
    """What every loss is: ``fn(logits, y, *, step=1, total_steps=1, ignore_mask=None) -> (B,)``.

    Higher means the model does worse on the sample (see the module docstring). Any
    callable with this signature can be used where a ``LossFn`` is expected. The losses of
    this package document their arguments, errors and shapes here, once.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import LossFn, get_loss
        >>> loss: LossFn = get_loss("ce")
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3])).shape
        torch.Size([2])
    """

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                 ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The per-sample loss ``(B,)`` of ``logits`` against labels ``y``.

        Args:
            logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
            y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
                targeted).
            step: the attack iteration t (1-based); only the losses in ``STEP_DEPENDENT`` read it.
            total_steps: the number of iterations T; only the losses in ``STEP_DEPENDENT`` read it.
            ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

        Returns:
            The loss per sample, float ``(B,)``.

        Raises:
            ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).
        """
        ...


def check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``y`` fits ``logits`` for exactly one task (see module doc).

    Classification logits ``(B, K)`` need labels ``(B,)``; segmentation logits
    ``(B, K, *spatial)`` need labels ``(B, 1, *spatial)``. Label values are not checked.

    Args:
        logits: ``(B, K)`` or ``(B, K, *spatial)``.
        y: the labels to check.

    Returns:
        None.

    Raises:
        ValueError: ``logits`` has fewer than 2 dimensions, or ``y``'s shape does not fit.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)`` respectively

    Example:
        >>> import torch
        >>> from medrobust.losses import check_labels
        >>> check_labels(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long))
        >>> check_labels(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
        Traceback (most recent call last):
            ...
        ValueError: y: segmentation logits (2, 3, 4, 4) need labels of shape (2, 1, 4, 4), got (2, 4, 4)
    """
    if logits.ndim < 2:
        raise ValueError(f"logits must be (B, K) or (B, K, *spatial), got shape {tuple(logits.shape)}")
    if logits.ndim == 2:
        if y.shape != (logits.shape[0],):
            raise ValueError(f"y: classification logits {tuple(logits.shape)} need labels of shape "
                             f"({logits.shape[0]},), got {tuple(y.shape)}")
    elif y.shape != (logits.shape[0], 1, *logits.shape[2:]):
        raise ValueError(f"y: segmentation logits {tuple(logits.shape)} need labels of shape "
                         f"{(logits.shape[0], 1, *logits.shape[2:])}, got {tuple(y.shape)}")


def _keep(logits: torch.Tensor, ignore_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Weights (B, *spatial) that are 1 where a voxel counts, or None for all voxels."""
    if ignore_mask is None:
        return None
    want = (logits.shape[0],) if logits.ndim == 2 else (logits.shape[0], 1, *logits.shape[2:])
    if ignore_mask.shape != want:
        raise ValueError(f"ignore_mask must have shape {want} for logits {tuple(logits.shape)}, "
                         f"got {tuple(ignore_mask.shape)}")
    keep = (ignore_mask == 0).to(logits.dtype)
    return keep if logits.ndim == 2 else keep[:, 0]


def _reduce(per_voxel: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over the non-batch axes of ``per_voxel`` (B,) or (B, *spatial), ignoring voxels."""
    if per_voxel.ndim == 1:
        return per_voxel if keep is None else per_voxel * keep
    flat = per_voxel.reshape(per_voxel.shape[0], -1)
    if keep is None:  # sum / n, not mean: its backward is a view, not a volume-sized division
        return flat.sum(1) / flat.shape[1]
    k = keep.reshape(keep.shape[0], -1)
    return (flat * k).sum(1) / k.sum(1).clamp_min(1.0)


def _target(y: torch.Tensor) -> torch.Tensor:
    """Class indices (B,) or (B, *spatial) from the label tensor."""
    return y if y.ndim == 1 else y[:, 0]


def _ce_map(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, _target(y).long(), reduction="none")
