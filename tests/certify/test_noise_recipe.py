"""The gaussian_noise recipe: noise of std sigma in the stated unit, the clean mix, bad arguments,
and a run of the one training loop that records its parameters in the checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.training.loop import TrainConfig, fit
from medrobust.training.noise_recipe import GaussianNoiseTraining
from medrobust.training.recipes import RECIPES, StepInfo, build_recipe, task_loss
from medrobust.units import IntensityMap
from tests.training.tiny import BlobSegmentation, tiny_unet


def test_registered_under_its_name() -> None:
    assert RECIPES["gaussian_noise"] is GaussianNoiseTraining
    assert build_recipe("gaussian_noise", sigma=25, unit="HU").params() == {"sigma": 25.0, "unit": "HU",
                                                                            "clean_weight": 0.0}


def test_noise_has_the_stated_std_in_hu_and_per_case_for_1_255_on_z_scored_data() -> None:
    recipe = GaussianNoiseTraining(sigma=42.5, unit="HU")
    recipe.intensity = IntensityMap.ct_window(-175, 250)  # 42.5 HU = 0.1 model units
    x = torch.rand(2, 1, 64, 64)
    assert float((recipe.noisy(x) - x).std()) == pytest.approx(0.1, rel=0.03)

    per_case = GaussianNoiseTraining(sigma=25.5, unit="1/255")  # a tenth of each case's own range
    per_case.intensity = IntensityMap.z_score(0.0, 1.0)
    x = torch.cat([torch.linspace(0, 1, 4096).reshape(1, 1, 64, 64), torch.linspace(0, 4, 4096).reshape(1, 1, 64, 64)])
    std = (per_case.noisy(x) - x).flatten(1).std(1)
    assert std.tolist() == pytest.approx([0.1, 0.4], rel=0.04)


def test_the_clean_weight_mixes_the_clean_loss() -> None:
    model = torch.nn.Conv2d(1, 2, 1)
    x, y = torch.rand(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))
    recipe = GaussianNoiseTraining(sigma=0.5, clean_weight=0.25)
    torch.manual_seed(3)
    loss, logs = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
    torch.manual_seed(3)
    noisy = task_loss(model(recipe.noisy(x)), y)
    clean = task_loss(model(x), y).detach()
    assert float(loss.detach()) == pytest.approx(0.75 * float(noisy.detach()) + 0.25 * float(clean), rel=1e-6)
    assert logs["noisy_loss"] == pytest.approx(float(noisy.detach()), rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma": 0.0}, "sigma must be > 0"),
    ({"sigma": float("nan")}, "sigma must be > 0"),
    ({"unit": "mm"}, "unknown unit 'mm' for sigma"),
    ({"clean_weight": 1.5}, r"clean_weight must be in \[0, 1\]"),
])
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianNoiseTraining(**kwargs)


def test_trains_in_the_loop_and_records_its_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_unet(norm=None)
    result = fit(model, build_recipe("gaussian_noise", sigma=0.2), BlobSegmentation(4), BlobSegmentation(2, seed=1),
                 TrainConfig(epochs=1, batch_size=2, lr=1e-2, seed=0), tmp_path, classes=["background", "fore"],
                 progress=False)
    meta = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert meta["recipe"] == "gaussian_noise" and result is not None
    assert meta["extra"]["recipe_params"] == {"sigma": 0.2, "unit": "model", "clean_weight": 0.0}
