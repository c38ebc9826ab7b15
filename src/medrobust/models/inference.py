"""Inference helper shared by training validation, prediction and evaluation."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medrobust.models.wrappers import SlidingWindow


def needs_window(x: torch.Tensor, roi_size: Sequence[int] | None) -> bool:
    """True when any spatial axis of ``x`` exceeds the ROI.

    Args:
        x: images ``(B, C, *spatial)``.
        roi_size: the model's window, one size per spatial axis, or None (never windowed).

    Returns:
        Whether ``x`` needs sliding-window inference.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 12, 8, 8)
        >>> needs_window(x, (8, 8, 8)), needs_window(x, (16, 16, 16)), needs_window(x, None)
        (True, False, False)
    """
    return roi_size is not None and any(s > r for s, r in zip(x.shape[2:], roi_size))


def windowed(model: nn.Module, x: torch.Tensor, roi_size: Sequence[int] | None,
             overlap: float = 0.25, sw_batch_size: int = 1) -> nn.Module:
    """``model`` itself, or wrapped in :class:`SlidingWindow` when ``x`` exceeds the ROI.

    Args:
        model: maps images to logits.
        x: images ``(B, C, *spatial)`` the model will see.
        roi_size: the model's window, or None.
        overlap: window overlap in [0, 1) of the wrapper (default 0.25).
        sw_batch_size: windows per forward of the wrapper (default 1).

    Returns:
        ``model``, or ``SlidingWindow(model, roi_size, overlap, sw_batch_size)``; a model that
        already is a SlidingWindow is never wrapped again.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv3d(1, 3, 3, padding=1)
        >>> x = torch.zeros(1, 1, 12, 12, 12)
        >>> type(windowed(net, x, (8, 8, 8))).__name__, windowed(net, x, None) is net
        ('SlidingWindow', True)
        >>> windowed(net, x, (8, 8, 8), sw_batch_size=4).sw_batch_size
        4
    """
    if needs_window(x, roi_size) and not isinstance(model, SlidingWindow):
        return SlidingWindow(model, roi_size=tuple(roi_size), overlap=overlap,  # type: ignore[arg-type]
                             sw_batch_size=sw_batch_size)
    return model


@torch.no_grad()
def infer(model: nn.Module, x: torch.Tensor, roi_size: Sequence[int] | None = None,
          overlap: float = 0.25) -> torch.Tensor:
    """Logits of ``model`` in eval mode, without a graph; its mode is restored.

    Volumes larger than ``roi_size`` go through :class:`SlidingWindow`.

    Args:
        model: maps images to logits.
        x: images ``(B, C, *spatial)``, model units.
        roi_size: the model's window, or None (whole input at once).
        overlap: window overlap in [0, 1) (default 0.25).

    Returns:
        Logits ``(B, K, *spatial)`` (segmentation) or ``(B, K)`` (classification).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Dropout()).train()
        >>> infer(net, torch.rand(1, 1, 12, 12, 12), roi_size=(8, 8, 8)).shape
        torch.Size([1, 3, 12, 12, 12])
        >>> net.training
        True
    """
    was_training = model.training
    model.eval()
    try:
        return windowed(model, x, roi_size, overlap)(x)
    finally:
        model.train(was_training)
