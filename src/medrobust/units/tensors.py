"""Tensor helpers of the units: the ``Scalar`` type and per-sample broadcasting (``per_sample``, ``expand_to``)."""
from __future__ import annotations

import torch

Number = float | int
Scalar = Number | torch.Tensor


def _as_tensor(value: Scalar, name: str) -> torch.Tensor:
    t = value.detach().clone().to(torch.float64) if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if t.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a per-sample vector of shape (B,), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value}")
    return t


def per_sample(value: torch.Tensor, batch: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """Broadcast a scalar or ``(B,)`` tensor to shape ``(batch,)`` on ``like``'s device/dtype.

    Args:
        value: a scalar tensor, a one-element tensor, or a per-sample tensor ``(batch,)``.
        batch: the batch size B.
        like: optional tensor whose device and dtype the result takes (else ``value``'s).

    Returns:
        ``value`` broadcast to shape ``(batch,)`` (a view when ``value`` is a scalar).

    Raises:
        ValueError: ``value`` is a vector with neither 1 nor ``batch`` entries.

    Shape:
        - value: ``()``, ``(1,)`` or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.units import per_sample
        >>> per_sample(torch.tensor(0.5), 3).tolist()
        [0.5, 0.5, 0.5]
        >>> per_sample(torch.tensor([1, 2]), 2, like=torch.zeros(2, 1, 4, 4)).dtype
        torch.float32
    """
    if value.ndim == 1 and value.numel() not in (1, batch):
        raise ValueError(f"per-sample value has {value.numel()} entries but the batch has {batch} samples")
    out = value.reshape(-1).expand(batch) if value.numel() == 1 else value.reshape(batch)
    if like is not None:
        out = out.to(device=like.device, dtype=like.dtype)
    return out


def expand_to(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so it broadcasts over ``x``.

    Args:
        value: per-sample values ``(B,)``.
        x: the batch to broadcast over, ``(B, C, *spatial)``.

    Returns:
        ``value`` as a view with ``x.ndim`` dimensions.

    Shape:
        - value: ``(B,)``
        - x: ``(B, *)``
        - output: ``(B, 1, ..., 1)`` with ``x.ndim`` dimensions

    Example:
        >>> import torch
        >>> from medrobust.units import expand_to
        >>> x = torch.zeros(2, 1, 4, 4, 4)
        >>> expand_to(torch.tensor([0.1, 0.2]), x).shape
        torch.Size([2, 1, 1, 1, 1])
    """
    return value.reshape(-1, *([1] * (x.ndim - 1)))
