"""Inference helper shared by training validation, prediction and evaluation."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medrobust.models.wrappers import SlidingWindow


def needs_window(x: torch.Tensor, roi_size: Sequence[int] | None) -> bool:
    """True when any spatial axis of ``x`` (B, C, *spatial) exceeds the ROI."""
    return roi_size is not None and any(s > r for s, r in zip(x.shape[2:], roi_size))


def windowed(model: nn.Module, x: torch.Tensor, roi_size: Sequence[int] | None,
             overlap: float = 0.25) -> nn.Module:
    """``model`` itself, or wrapped in :class:`SlidingWindow` when ``x`` exceeds the ROI."""
    if needs_window(x, roi_size) and not isinstance(model, SlidingWindow):
        return SlidingWindow(model, roi_size=tuple(roi_size), overlap=overlap)  # type: ignore[arg-type]
    return model


@torch.no_grad()
def infer(model: nn.Module, x: torch.Tensor, roi_size: Sequence[int] | None = None,
          overlap: float = 0.25) -> torch.Tensor:
    """Logits (B, K, *spatial) or (B, K) of ``model`` in eval mode; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return windowed(model, x, roi_size, overlap)(x)
    finally:
        model.train(was_training)
