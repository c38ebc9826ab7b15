"""Gaussian noise: a random, not worst-case, perturbation with its std in real units.

``x_adv = clip(x + mask · N(0, std²), valid range)``. Noise is **not** norm-bounded: its
Linf/L2 size is a random outcome of ``std`` (Linf grows like std·sqrt(2 ln n) over n
voxels), so it is not projected onto the budget's ball; only the valid range and the mask
are kept. The achieved norms are recorded in ``AttackResult.extra`` (``linf_model`` and
``l2_model``, ``(B,)``) so that noise can be placed beside norm-bounded attacks.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackResult, AttackState
from medrobust.units import Budget, Scalar, expand_to, per_sample

__all__ = ["GaussianNoise"]


class GaussianNoise(Attack):
    """Additive Gaussian noise, clipped to the valid range and kept inside the mask.

    Args:
        budget: gives the unit, the valid range and (by default) the std: ``std=None`` uses
            the budget's eps as the standard deviation. Its ball is not enforced.
        std: standard deviation in the budget's unit (e.g. HU), >= 0.
        seed: seeds the noise (a generator on x's device); None uses torch's RNG.
        loss: only reported (``best_loss``); the noise does not look at the model.
        targeted: only flips the sign convention of the reported loss.

    Raises:
        ValueError: a negative or non-finite ``std``.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - output: ``(B, C, *spatial)``; ``run(...).extra["linf_model"]`` and
          ``["l2_model"]``: ``(B,)``; ``loss_history``: ``(1, B)``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import GaussianNoise
        >>> from medrobust.units import Budget, IntensityMap
        >>> imap = IntensityMap.ct_window(-175, 250)     # [-175, 250] HU -> [0, 1]
        >>> budget = Budget.linf(8, unit="HU", intensity=imap)
        >>> model = torch.nn.Conv3d(1, 3, 3, padding=1)
        >>> x = torch.full((1, 1, 8, 8, 8), 0.5)
        >>> y = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
        >>> result = GaussianNoise(budget, std=10, seed=0).run(model, x, y)
        >>> round(float((result.x_adv - x).std() * 425), 0)                     # std in HU
        10.0
        >>> sorted(result.extra), result.loss_history.shape
        (['l2_model', 'linf_model'], torch.Size([1, 1]))
    """

    name = "gaussian"
    uses_step_size = False

    def __init__(self, budget: Budget, *, std: Scalar | None = None, seed: int | None = None, loss: Any = "ce",
                 targeted: bool = False) -> None:
        if std is not None:
            budget.to_model(std, what="std")  # validates: finite and >= 0
        super().__init__(budget, steps=1, loss=loss, targeted=targeted, seed=seed)
        self.std = std

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        std = base.eps if self.std is None else per_sample(self.budget.to_model(self.std, what="std"), x.shape[0], x)
        noise = torch.randn(x.shape, generator=base.generator, device=x.device, dtype=x.dtype) * expand_to(std, x)
        lo, hi = base.budget.range_for(x)
        x_adv = torch.maximum(torch.minimum(x + noise, hi), lo)
        if base.mask is not None:
            x_adv = torch.where(base.mask.expand_as(x) != 0, x_adv, x)
        with torch.no_grad():
            loss = self.loss_fn(model(x_adv), y, step=1, total_steps=1)
        delta = (x_adv - x).reshape(x.shape[0], -1)
        norms = {"linf_model": delta.abs().amax(1), "l2_model": delta.norm(dim=1)}
        return AttackResult(x_adv, loss[None], loss, 0.0, extra=norms)
