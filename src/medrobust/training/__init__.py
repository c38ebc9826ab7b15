"""medrobust.training: the one loop and the recipes that decide a batch's loss.

Importing this package registers every recipe in ``RECIPES``. ``train_model`` (``api.py``)
trains a registry network on a dataset folder in one call; ``pretrain.pretrain_natural``
pretrains a backbone on natural photographs.
"""
from medrobust.training import (  # noqa: F401  (register recipes)
    adversarial,
    assimilation,
    cooperative,
    noise_recipe,
    self_adaptive,
    vaft,
)
from medrobust.training.api import train_model
from medrobust.training.loop import FitResult, TrainConfig, fit
from medrobust.training.recipes import RECIPES, Recipe, StepInfo, build_recipe, register_recipe

__all__ = ["RECIPES", "FitResult", "Recipe", "StepInfo", "TrainConfig", "build_recipe", "fit", "register_recipe",
           "train_model"]
