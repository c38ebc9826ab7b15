"""The training loop: learns, selects on validation, refuses a mismatched resume, and DDP equals one
process. Exact resume of every recipe: test_every_recipe.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrobust.models.checkpoint import load_checkpoint
from medrobust.models.registry import build_model
from medrobust.training.loop import TrainConfig, fit
from medrobust.training.recipes import Recipe, build_recipe
from tests.training.tiny import BlobSegmentation, run_torchrun, tiny_unet


def _train(out: Path, epochs: int, resume: bool = True, batch_size: int = 2) -> float:
    torch.manual_seed(0)
    model = tiny_unet()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-2, seed=3, resume=resume)
    result = fit(model, Recipe(), BlobSegmentation(8), BlobSegmentation(4, seed=1), cfg, out,
                 classes=["background", "blob"], progress=False)
    return result.best_metric


def test_training_learns_and_keeps_best_validation_checkpoint(tmp_path: Path) -> None:
    best = _train(tmp_path / "run", epochs=6)
    assert best > 0.5  # a 2-class blob task; chance-level Dice of an untrained net is far lower
    model, info = load_checkpoint(tmp_path / "run" / "model.json")
    assert info.recipe == "standard" and info.classes == ["background", "blob"]
    history = (tmp_path / "run" / "history.csv").read_text(encoding="utf-8").splitlines()
    assert len(history) == 7 and "val_score" in history[0]
    scores = [float(r.split(",")[history[0].split(",").index("val_score")]) for r in history[1:]]
    assert max(scores) == pytest.approx(best) and info.extra["epoch"] == scores.index(max(scores)) + 1


def test_resume_refuses_another_recipe(tmp_path: Path) -> None:
    _train(tmp_path / "run", epochs=1)
    state = json.loads((tmp_path / "run" / "last" / "state.json").read_text(encoding="utf-8"))
    assert state is not None

    class Other(Recipe):
        name = "other"

    with pytest.raises(ValueError, match="recipe"):
        fit(tiny_unet(), Other(), BlobSegmentation(4), BlobSegmentation(2), TrainConfig(epochs=2), tmp_path / "run",
            classes=["background", "blob"], progress=False)


def test_resume_refuses_another_architecture(tmp_path: Path) -> None:
    _train(tmp_path / "run", epochs=1)
    wider = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(8, 16), strides=(2,),
                        num_res_units=0)
    with pytest.raises(ValueError, match="architecture"):
        fit(wider, Recipe(), BlobSegmentation(4), BlobSegmentation(2), TrainConfig(epochs=2), tmp_path / "run",
            classes=["background", "blob"], progress=False)


def test_unknown_recipe_is_named() -> None:
    with pytest.raises(ValueError, match="allowed"):
        build_recipe("no-such-recipe")


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_equals_one_process(tmp_path: Path) -> None:
    body = """
        from medrobust.training.loop import TrainConfig, fit
        from medrobust.training.recipes import Recipe
        from tests.training.tiny import BlobSegmentation, tiny_unet
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=2, batch_size=int(sys.argv[2]), lr=1e-2, seed=3, scheduler="none")
        fit(tiny_unet(norm=None), Recipe(), BlobSegmentation(8), BlobSegmentation(2, seed=1), cfg, sys.argv[1],
            classes=["background", "blob"], progress=False)
    """
    ddp = run_torchrun(tmp_path / "ddp_train.py", body, str(tmp_path / "ddp"), "2")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(tmp_path / "ddp_train.py"), str(tmp_path / "single"), "4"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(str(tmp_path / "ddp" / "last" / "state.safetensors"))
    b = load_file(str(tmp_path / "single" / "last" / "state.safetensors"))
    weights = [k for k in a if k.startswith(".model.")]
    assert weights
    for k in weights:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
