"""Adversarial recipes: the perturbation used in training is real (non-zero) and inside eps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.training import TrainConfig, build_recipe, fit
from medrobust.training.recipes import StepInfo
from tests.training.tiny import BlobSegmentation, tiny_unet


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ds = BlobSegmentation(2)
    return torch.stack([ds[0]["image"], ds[1]["image"]]), torch.stack([ds[0]["label"], ds[1]["label"]])


def test_free_at_trains_on_a_nonzero_perturbation_within_eps() -> None:
    torch.manual_seed(0)
    model, (x, y) = tiny_unet(), _batch()
    recipe = build_recipe("free_at", eps=0.1, eps_unit="model", replays=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    norms = []
    for _ in range(recipe.replays):
        opt.zero_grad()
        loss, logs = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
        loss.backward()
        recipe.after_backward(StepInfo(0, 0, 1))
        opt.step()
        norms.append(float(recipe.delta.abs().amax()))
    assert norms[0] > 0.05  # the published `b_eps // 2` step floors to 0 and trains on clean data
    assert max(norms) <= 0.1 + 1e-6
    assert logs["delta_norm"] > 0  # the replays after the first train on x + delta, not on x


@pytest.mark.parametrize("name", ["pgd_at", "trades", "fast_at"])
def test_recipe_inner_attack_raises_the_loss_within_budget(name: str) -> None:
    torch.manual_seed(0)
    model, (x, y) = tiny_unet(), _batch()
    recipe = build_recipe(name, eps=0.2, eps_unit="model", **({"steps": 3} if name != "fast_at" else {}))
    loss, logs = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    if name == "pgd_at":
        assert logs["adv_loss"] > logs["clean_loss"]
    if name == "trades":
        assert logs["kl"] > 0


def test_bad_recipe_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="adv_weight"):
        build_recipe("pgd_at", adv_weight=1.5)
    with pytest.raises(ValueError, match="eps"):
        build_recipe("pgd_at", eps=-1)


@pytest.mark.slow
def test_self_adaptive_recipe_logs_its_schedule(tmp_path: Path) -> None:
    recipe = build_recipe("self_adaptive", eps=0.1, eps_unit="model", check_every=1)
    fit(tiny_unet(), recipe, BlobSegmentation(4), BlobSegmentation(2, seed=1), TrainConfig(epochs=3, batch_size=2),
        tmp_path, classes=["background", "blob"], progress=False)
    header, *rows = (tmp_path / "history.csv").read_text(encoding="utf-8").splitlines()
    cols = header.split(",")
    iters = [float(r.split(",")[cols.index("attack_iters")]) for r in rows]
    assert iters[0] == 1 and iters[1] == 2  # epoch check_every adds an iteration
    assert all(float(r.split(",")[cols.index("mag")]) > 0 for r in rows)
