"""``gaussian_noise``: Gaussian data augmentation at the smoothing level σ (Cohen et al. 2019).

A base model meant for randomized smoothing (:mod:`medrobust.certify`) is trained on
``x + N(0, σ² I)``, the inputs the smoothed model feeds it; without it a network trained on
clean images mostly abstains under noise. σ is stated in a budget unit and converted per
batch like an attack budget (``1/255`` of each case's range on z-scored data). The noisy
images are not clipped, as at certification time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from typing_extensions import override

from medrobust.training.recipes import Recipe, StepInfo, register_recipe, task_loss
from medrobust.units import UNITS, budget_for_case, expand_to, per_sample


@register_recipe("gaussian_noise")
class GaussianNoiseTraining(Recipe):
    """Train on noisy copies: loss = L(f(x + σ·ε)), ε ~ N(0, I), or a mix with the clean loss.

    Args:
        sigma: the noise standard deviation (> 0) in ``unit``; train at the σ you certify at.
        unit: "model", "raw", "HU" or "1/255" (see :func:`medrobust.units.to_model_units`).
        clean_weight: weight in [0, 1] of the clean loss (0, Cohen et al.'s setting: noisy only).

    Raises:
        ValueError: ``sigma`` not > 0, an unknown ``unit`` or ``clean_weight`` outside [0, 1].

    Example:
        >>> import torch
        >>> from medrobust.training.recipes import StepInfo, build_recipe
        >>> recipe = build_recipe("gaussian_noise", sigma=0.25, unit="model")
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> loss, logs = recipe.batch_loss(model, torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]), StepInfo(0, 0, 1))
        >>> loss.ndim, sorted(logs), recipe.params()
        (0, ['loss', 'noisy_loss'], {'sigma': 0.25, 'unit': 'model', 'clean_weight': 0.0})
    """

    def __init__(self, sigma: float = 0.25, unit: str = "model", clean_weight: float = 0.0) -> None:
        if not sigma > 0:  # also refuses NaN
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if not 0.0 <= clean_weight <= 1.0:
            raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight}")
        if unit not in UNITS:  # "raw" and "HU" convert once the loop has set the dataset's IntensityMap
            raise ValueError(f"unknown unit {unit!r} for sigma; allowed: {', '.join(UNITS)}")
        self.sigma, self.unit, self.clean_weight = float(sigma), unit, float(clean_weight)
        self.passes_per_batch = 2 if clean_weight > 0 else 1

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise of std σ in model units (per sample), not clipped.

        Args:
            x: images ``(B, C, *spatial)``, model units.

        Returns:
            Noisy images, same shape.

        Shape:
            - x: ``(B, C, *spatial)``; output: the same
        """
        sigma = per_sample(budget_for_case("l2", self.sigma, self.unit, x, self.intensity).eps, x.shape[0], x)
        return x + expand_to(sigma, x) * torch.randn_like(x)

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        noisy = task_loss(model(self.noisy(x)), y)
        logs = {"noisy_loss": float(noisy.detach())}
        loss = noisy
        if self.clean_weight > 0:
            clean = task_loss(model(x), y)
            loss = (1 - self.clean_weight) * noisy + self.clean_weight * clean
            logs["clean_loss"] = float(clean.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs

    @override
    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "unit": self.unit, "clean_weight": self.clean_weight}
