"""Recipe ``assimilation`` (seed 004): α·CE(F(B(C(T(X))))) + (1-α)·GLCMLoss(grayscale(C(T(X))), X).

The model must be the registry's ``assimilation`` composite
(:class:`~medrobust.models.assimilation.DomainAssimilation`); the recipe needs its
intermediate colour image C(T(X)). The GLCM term keeps the texture of what the backbone
sees close to the scan's, so the texture and colour modules adapt the image towards the
natural-image domain without erasing diagnostic texture. Both images are quantised with
their own min/max (``GLCMLoss`` default), so brightness and contrast may change freely.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from typing_extensions import override

from medrobust.models.assimilation import DomainAssimilation
from medrobust.training.glcm import GLCMLoss, to_grayscale
from medrobust.training.recipes import Recipe, StepInfo, register_recipe, task_loss


@register_recipe("assimilation")
class DomainAssimilationRecipe(Recipe):
    """Task loss on the logits plus the GLCM texture loss on the assimilated image.

    Args:
        alpha: weight α in [0, 1] of the task loss (CE for classification).
        levels, distance, patch_size, bandwidth, kernel, homogeneity, reduction, entries:
            the :class:`~medrobust.training.glcm.GLCMLoss` options (slides' defaults:
            distance 3, 8 angles, 20x20 tiles, max over features of the summed differences).
    """

    def __init__(self, alpha: float = 0.5, levels: int = 16, distance: int = 3, patch_size: int = 20,
                 bandwidth: float = 0.5, kernel: Literal["gaussian", "triangular"] = "gaussian",
                 homogeneity: Literal["slides", "skimage"] = "slides", reduction: Literal["max", "mean"] = "max",
                 entries: Literal["sum", "mean"] = "sum") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._params = {"alpha": self.alpha, "levels": levels, "distance": distance, "patch_size": patch_size,
                        "bandwidth": bandwidth, "kernel": kernel, "homogeneity": homogeneity,
                        "reduction": reduction, "entries": entries}
        self.glcm = GLCMLoss(levels=levels, distance=distance, patch_size=patch_size, bandwidth=bandwidth,
                             kernel=kernel, homogeneity=homogeneity, reduction=reduction, entries=entries)

    @override
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(model, DomainAssimilation):
            raise ValueError(f"recipe 'assimilation' needs the 'assimilation' model (texture + colour modules "
                             f"before a backbone), got {type(model).__name__}; train with --model assimilation")
        image = model.assimilate(x)
        task = task_loss(model.backbone(image), y)
        texture = self.glcm(to_grayscale(image), to_grayscale(x)).mean()
        loss = self.alpha * task + (1.0 - self.alpha) * texture
        return loss, {"loss": float(loss.detach()), "task_loss": float(task.detach()),
                      "glcm_loss": float(texture.detach())}
