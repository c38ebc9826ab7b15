"""Every recipe in the one loop: resume mid-training repeats the uninterrupted run exactly,
and two gloo processes under torchrun train every recipe with ranks kept in sync."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from medrobust.models.registry import build_model
from medrobust.training import loop
from medrobust.training.loop import TrainConfig, fit
from medrobust.training.recipes import RECIPES, build_recipe
from tests.training.tiny import BlobSegmentation, StripeClassification, run_torchrun, tiny_unet

# recipe -> (parameters, network builder, classification?) on 16x16 blobs or 24x24 stripes
SETUPS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "standard": ({}, "unet", False),
    "pgd_at": ({"eps": 0.1, "eps_unit": "model", "steps": 2}, "unet", False),
    "trades": ({"eps": 0.1, "eps_unit": "model", "steps": 2}, "unet", False),
    "fast_at": ({"eps": 0.1, "eps_unit": "model"}, "unet", False),
    "free_at": ({"eps": 0.1, "eps_unit": "model", "replays": 2}, "unet", False),
    "self_adaptive": ({"eps": 0.1, "eps_unit": "model", "check_every": 1, "max_iters": 3}, "unet", False),
    "vaft": ({"steps": 2, "block_size": [8, 8]}, "unet", False),
    "cooperative": ({"masking": "all"}, "cooperative", False),
    "assimilation": ({"alpha": 0.5, "patch_size": 8}, "assimilation", True),
    "gaussian_noise": ({"sigma": 0.1}, "unet", False),
}
NETWORKS = {
    "unet": lambda: tiny_unet(norm=None),
    "cooperative": lambda: build_model("cooperative", spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8]),
    "assimilation": lambda: build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2,
                                        backbone="resnet18", backbone_kwargs={"widen_factor": 0.25}, texture_width=4,
                                        texture_blocks=1, colour_width=4),
}


def test_the_setups_cover_every_registered_recipe() -> None:
    assert set(SETUPS) == set(RECIPES)


def _fit(recipe: str, out: Path, epochs: int) -> tuple[torch.nn.Module, Any]:
    """Train a fresh seeded network with ``recipe``; the trained model and the recipe."""
    params, network, classification = SETUPS[recipe]
    torch.manual_seed(0)
    data = (StripeClassification(4), StripeClassification(2, seed=1)) if classification else \
        (BlobSegmentation(4), BlobSegmentation(2, seed=1))
    model, built = NETWORKS[network](), build_recipe(recipe, **params)
    fit(model, built, *data, TrainConfig(epochs=epochs, batch_size=2, lr=1e-2, seed=3), out,
        classes=["background", "fore"], progress=False)
    return model, built


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SETUPS))
def test_resume_mid_training_repeats_the_uninterrupted_run(recipe: str, tmp_path: Path, monkeypatch) -> None:
    _fit(recipe, tmp_path / "full", epochs=3)
    real_save, saved = loop.save_state, []

    def save_then_die(folder: Path, state: dict) -> None:
        real_save(folder, state)
        saved.append(state["epoch"])
        if len(saved) == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    monkeypatch.setattr(loop, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _fit(recipe, tmp_path / "split", epochs=3)
    monkeypatch.setattr(loop, "save_state", real_save)
    _fit(recipe, tmp_path / "split", epochs=3)
    a = load_file(str(tmp_path / "full" / "last" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "last" / "state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith(".model.") for k in a)
    for key in a:  # weights, optimizer moments and the recipe's state (self-adaptive schedule ...)
        assert torch.equal(a[key], b[key]), key
    assert len((tmp_path / "split" / "history.csv").read_text(encoding="utf-8").splitlines()) == 4  # header + 3 epochs


@pytest.mark.slow
def test_every_recipe_trains_under_torchrun_with_ranks_in_sync(tmp_path: Path) -> None:
    done = run_torchrun(tmp_path / "ddp_recipes.py", """
        import json, os
        from pathlib import Path
        from safetensors.torch import save_file
        from tests.training.test_every_recipe import SETUPS, _fit
        out, rank = Path(sys.argv[1]), os.environ["RANK"]
        for recipe in SETUPS:
            model, built = _fit(recipe, out / recipe, epochs=2)
            params = {k: v.detach().contiguous() for k, v in model.named_parameters()}
            save_file(params, str(out / recipe / f"rank{rank}.safetensors"))
            (out / recipe / f"recipe{rank}.json").write_text(json.dumps(built.state_dict(), default=lambda t: "tensor"))
    """, str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    for recipe, (_, network, _) in SETUPS.items():
        torch.manual_seed(0)
        initial = dict(NETWORKS[network]().named_parameters())
        ranks = [load_file(str(tmp_path / recipe / f"rank{r}.safetensors")) for r in (0, 1)]
        assert ranks[0].keys() == initial.keys()
        for name, value in ranks[0].items():
            assert torch.isfinite(value).all(), (recipe, name)
            assert torch.equal(value, ranks[1][name]), (recipe, name)  # the averaged step keeps ranks equal
        assert any(not torch.equal(ranks[0][n], initial[n].detach()) for n in initial), recipe  # it trained
        states = [(tmp_path / recipe / f"recipe{r}.json").read_text(encoding="utf-8") for r in (0, 1)]
        assert states[0] == states[1], recipe  # e.g. one self-adaptive schedule, not one per rank


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SETUPS))
def test_every_recipe_trains_under_bf16_autocast(recipe: str, tmp_path: Path) -> None:
    params, network, classification = SETUPS[recipe]
    data = (StripeClassification(4), StripeClassification(2, seed=1)) if classification else \
        (BlobSegmentation(4), BlobSegmentation(2, seed=1))
    result = fit(NETWORKS[network](), build_recipe(recipe, **params), *data,
                 TrainConfig(epochs=1, batch_size=2, lr=1e-2, amp="bf16"), tmp_path, classes=["background", "fore"],
                 progress=False)
    row = result.history[-1]
    assert torch.isfinite(torch.tensor(row["train_loss"])) and 0.0 <= result.best_metric <= 1.0
