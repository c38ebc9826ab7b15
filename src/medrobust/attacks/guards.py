"""What every attack does around its model and inputs: the frozen-model context and the input check.

:func:`frozen` puts the model in eval mode without parameter gradients for the attack and
restores it afterwards; :func:`check_inputs` validates images, labels and mask (design.md
section 3) and normalises the mask.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["frozen", "check_inputs"]


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, as a context manager.

    Restores every module's training flag and every parameter's ``requires_grad``
    afterwards, also on error. Every attack runs its model inside it.

    Args:
        model: any ``nn.Module``.

    Yields:
        The same model, frozen.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout()).train()
        >>> with frozen(model) as m:
        ...     m.training, m[0].weight.requires_grad
        (False, False)
        >>> model.training, model[0].weight.requires_grad
        (True, True)
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires in flags:
            p.requires_grad_(requires)


def check_inputs(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Validate images, labels and mask (design.md section 3) and normalise the mask.

    Args:
        x: float images ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        y: integer labels, ``(B,)`` (classification) or ``(B, 1, *spatial)`` (segmentation).
        mask: region the perturbation may change, any values (nonzero = inside), or None.

    Returns:
        The mask as 0/1 in x's dtype and device, or None.

    Raises:
        ValueError: naming ``x``, ``y`` or ``mask`` when its type or shape does not fit.

    Shape:
        - mask: ``(B, 1, *spatial)`` or any shape with x's number of axes that broadcasts to x.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 8, 8)
        >>> check_inputs(x, torch.tensor([0, 1]), None) is None
        True
        >>> check_inputs(x, torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.ones(2, 1, 8, 8) * 5).unique()
        tensor([1.])
        >>> check_inputs(x, torch.tensor([0.5, 1.0]), None)
        Traceback (most recent call last):
        ...
        ValueError: y must hold integer class indices, got dtype torch.float32
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (4, 5):
        raise ValueError(f"x must be a float tensor (B, C, H, W) or (B, C, D, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    seg_shape = (x.shape[0], 1, *x.shape[2:])
    if y.shape != (x.shape[0],) and y.shape != seg_shape:
        raise ValueError(f"y: labels of shape {tuple(y.shape)} fit neither task; allowed: ({x.shape[0]},) "
                         f"for classification or {seg_shape} for segmentation")
    if mask is None:
        return None
    try:
        ok = mask.ndim == x.ndim and torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask must have shape {seg_shape} or broadcast to x {tuple(x.shape)}, got {tuple(mask.shape)}")
    return (mask != 0).to(device=x.device, dtype=x.dtype)
