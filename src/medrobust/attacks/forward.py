"""How the shared loop runs the model: reduced precision under autocast, and SlidingWindow's gradient.

Under a caller's autocast only the model's forward keeps the reduced precision
(:func:`_reduced_precision`); a :class:`~medrobust.models.wrappers.SlidingWindow` model
(:func:`_is_sliding_window`) gives the whole-volume input gradient window by window
(:class:`WholeVolume`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import nn

__all__ = ["WholeVolume"]


class _ReducedPrecision(nn.Module):
    """``model``'s forward under autocast to ``dtype``, its logits returned in float32."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x).float()


class WholeVolume(Protocol):
    """A model that gives the whole-volume input gradient window by window (``SlidingWindow``)."""

    def loss_and_input_grad(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                            keep_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(logits or None, loss (B,), d loss.sum() / d x)."""
        ...


def _is_sliding_window(model: nn.Module) -> bool:
    try:  # lazy: the models part may be absent or half-built; a plain model needs none of it
        from medrobust.models.wrappers import SlidingWindow
    except ImportError:
        return False
    return isinstance(model, SlidingWindow)


def _reduced_precision(model: nn.Module, device_type: str, dtype: torch.dtype) -> nn.Module:
    """``model`` with its forward under autocast to ``dtype``, its logits float32.

    A SlidingWindow's network is wrapped instead, so the attack keeps its window-by-window
    gradient and the blending stays float32.
    """
    if not _is_sliding_window(model):
        return _ReducedPrecision(model, device_type, dtype)
    from medrobust.models.wrappers import SlidingWindow

    sw = cast(SlidingWindow, model)
    return SlidingWindow(_ReducedPrecision(sw.model, device_type, dtype), sw.roi_size, sw.overlap,
                         sw.sw_batch_size, sw.mode, sw.sigma_scale)
