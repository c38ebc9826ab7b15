"""Training recipes: what one batch contributes to the loss (design.md section 6).

The loop in :mod:`medrobust.training.loop` owns epochs, optimisation, validation,
checkpoints and resume. A recipe owns only the batch loss, so every recipe (adversarial,
frequency, cooperative, ...) gets model selection, resume and DDP for free.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.losses import get_loss
from medrobust.registry import Registry
from medrobust.units import IntensityMap


@dataclass
class StepInfo:
    """Where the loop is: 0-based epoch and iteration, the epoch count, the AMP scaler."""

    epoch: int
    iteration: int
    epochs: int
    scaler: torch.amp.GradScaler | None = None


def is_classification(y: torch.Tensor) -> bool:
    """Labels (B,) mean classification; (B, 1, *spatial) mean segmentation."""
    return y.ndim == 1


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean clean training loss: CE for classification, Dice+CE for segmentation. Scalar."""
    if is_classification(y):
        return F.cross_entropy(logits, y)
    return get_loss("dice_ce")(logits, y).mean()


class Recipe:
    """Base recipe: the clean task loss.

    Subclasses override :meth:`batch_loss` and may keep state (``state_dict``) that the
    loop saves in every checkpoint and restores on resume.

    Attributes:
        name: registry name, written into the checkpoint.
        passes_per_batch: forward+backward passes a batch costs (for cost benchmarks).
        replays: optimizer steps the loop takes on each batch (minibatch replay).
        intensity: the dataset's IntensityMap, set by the loop (budgets in HU need it).
    """

    name = "standard"
    passes_per_batch = 1
    replays = 1
    intensity: IntensityMap | None = None

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the scalar loss to minimise and floats to log."""
        loss = task_loss(model(x), y)
        return loss, {"loss": float(loss.detach())}

    def after_backward(self, step: StepInfo) -> None:
        """Called after each backward, before the optimizer step (input gradients are there)."""
        return None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> dict[str, float]:
        """Called after each training epoch; returns extra values to log."""
        return {}

    def params(self) -> dict[str, Any]:
        """Hyper-parameters, saved in the checkpoint's ``recipe_params``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The recipe's resumable state (none by default), saved with the checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (nothing by default)."""
        return None


RECIPES: Registry[type[Recipe]] = Registry("recipe", {"standard": Recipe})  # live: read at call time


def register_recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator adding a recipe to :data:`RECIPES` under ``name`` (sets ``cls.name``).

    Args:
        name: the recipe's name (``medrobust train --recipe``).

    Returns:
        A decorator registering the class and returning it.

    Raises:
        ValueError: ``name`` is already taken by another class.

    Example:
        >>> from medrobust.training.recipes import Recipe, register_recipe
        >>> register_recipe("standard")(type("Other", (Recipe,), {}))
        Traceback (most recent call last):
            ...
        ValueError: recipe 'standard' is already registered
    """

    def deco(cls: type[Recipe]) -> type[Recipe]:
        RECIPES.add(name, cls)
        cls.name = name
        return cls

    return deco


def build_recipe(name: str, **params: Any) -> Recipe:
    """Recipe by name with its hyper-parameters; ValueError names the allowed recipes."""
    recipe = RECIPES[name]  # ValueError listing the allowed names
    try:
        return recipe(**params)
    except TypeError as err:
        raise ValueError(f"recipe {name!r}: bad parameters {sorted(params)} ({err})") from err
