"""Recipe ``assimilation``: α·CE + (1-α)·GLCM, gradients reach T and C, bad input named."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.models import build_model, load_checkpoint
from medrobust.training import TrainConfig, build_recipe, fit
from medrobust.training.glcm import GLCMLoss
from medrobust.training.recipes import StepInfo
from tests.training.tiny import StripeClassification, tiny_unet

NARROW = {"widen_factor": 0.25}


def _model() -> torch.nn.Module:
    return build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2, backbone="resnet18",
                       backbone_kwargs=NARROW, texture_width=4, texture_blocks=1, colour_width=4)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ds = StripeClassification(4)
    return torch.stack([it["image"] for it in ds.items]), torch.stack([it["label"] for it in ds.items])


def test_loss_is_the_weighted_sum_and_trains_texture_and_colour() -> None:
    torch.manual_seed(0)
    model, (x, y) = _model(), _batch()
    with torch.no_grad():  # leave the identity start so the texture term has a gradient at T
        model.texture.head.weight.normal_(0.0, 0.1)
    recipe = build_recipe("assimilation", alpha=0.3, patch_size=12, levels=8)
    loss, logs = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
    assert logs["glcm_loss"] > 0 and logs["task_loss"] > 0
    assert loss.item() == pytest.approx(0.3 * logs["task_loss"] + 0.7 * logs["glcm_loss"], rel=1e-5)
    with torch.no_grad():
        gray = (model.assimilate(x) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        expected = GLCMLoss(levels=8, patch_size=12)(gray, x).mean()
    assert logs["glcm_loss"] == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    for part in (model.texture, model.colour, model.backbone):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_alpha_one_is_the_task_loss_and_alpha_zero_leaves_the_backbone_alone() -> None:
    model, (x, y) = _model(), _batch()
    loss, logs = build_recipe("assimilation", alpha=1.0, patch_size=12).batch_loss(model, x, y, StepInfo(0, 0, 1))
    assert loss.item() == pytest.approx(logs["task_loss"])
    loss, _ = build_recipe("assimilation", alpha=0.0, patch_size=12).batch_loss(model, x, y, StepInfo(0, 0, 1))
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_0_1_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        build_recipe("assimilation", alpha=alpha)


def test_bad_glcm_options_and_models_are_named() -> None:
    with pytest.raises(ValueError, match="homogeneity"):
        build_recipe("assimilation", homogeneity="other")
    x, y = _batch()
    with pytest.raises(ValueError, match="needs the 'assimilation' model"):
        build_recipe("assimilation").batch_loss(tiny_unet(), x, y, StepInfo(0, 0, 1))
    with pytest.raises(ValueError, match="distance 30 must be smaller than the patch"):
        build_recipe("assimilation", distance=30, patch_size=12).batch_loss(_model(), x, y, StepInfo(0, 0, 1))


def test_fit_writes_an_assimilation_checkpoint(tmp_path: Path) -> None:
    recipe = build_recipe("assimilation", alpha=0.5, patch_size=12, levels=8)
    result = fit(_model(), recipe, StripeClassification(8), StripeClassification(4, seed=1), TrainConfig(epochs=2, batch_size=4, lr=3e-3),
                 tmp_path, classes=["horizontal", "vertical"], progress=False)
    model, info = load_checkpoint(result.checkpoint)
    assert info.recipe == "assimilation" and info.extra["recipe_params"]["alpha"] == 0.5
    assert model(torch.zeros(1, 1, 24, 24)).shape == (1, 2)
    header = (tmp_path / "history.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "train_glcm_loss" in header and "train_task_loss" in header
