"""Model selection on the validation split, clean and under a fixed attack (training/validation.py)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from medrobust.models.checkpoint import load_checkpoint
from medrobust.training.loop import TrainConfig, fit
from medrobust.training.recipes import Recipe
from medrobust.training.validation import RobustEvaluation, attacked_items, selection_metrics
from tests.training.tiny import BlobSegmentation, tiny_unet

CPU = torch.device("cpu")


class _Threshold(nn.Module):
    """Two-class classifier whose decision flips with a small change of the mean intensity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1) - 0.5
        return torch.stack([-50 * m, 50 * m], dim=1)


def _items(n: int = 8) -> list[dict]:
    intensity = {"offset": 0.0, "scale": 1.0, "clip": [0.0, 1.0]}
    items = []
    for i in range(n):
        label = i % 2
        value = 0.505 if label else 0.495  # 1.3/255 from the boundary: PGD at 4/255 flips it
        items.append({"image": torch.full((1, 8, 8), value), "label": torch.tensor(label), "id": str(i),
                      "meta": {"intensity": intensity}})
    return items


@pytest.mark.parametrize("criterion", ["clean", "robust", "mean"])
def test_selection_scores_clean_and_attacked_validation(criterion: str) -> None:
    scores = selection_metrics(criterion, _Threshold(), _items(), RobustEvaluation(steps=5),  # type: ignore[arg-type]
                               roi_size=None, overlap=0.25, device=CPU, num_classes=2)
    assert scores["clean_score"] == pytest.approx(1.0) and scores["accuracy"] == pytest.approx(1.0)
    if criterion == "clean":
        assert "robust_score" not in scores and scores["score"] == scores["clean_score"]
    else:
        assert scores["robust_score"] < 0.5  # every case is within the budget of the boundary
        expected = scores["robust_score"] if criterion == "robust" else (1.0 + scores["robust_score"]) / 2
        assert scores["score"] == pytest.approx(expected)


def test_attacked_items_stay_in_budget_repeat_exactly_and_restore_state() -> None:
    model = _Threshold().train()
    items = _items(4)
    attacked = attacked_items(model, items, RobustEvaluation(eps=2.0, steps=3), roi_size=None, overlap=0.25,
                              device=CPU)
    assert model.training
    state = torch.get_rng_state()
    again = attacked_items(model, items, RobustEvaluation(eps=2.0, steps=3), roi_size=None, overlap=0.25, device=CPU)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(attacked, again))  # same random starts
    for clean, adv in zip(items, attacked):
        assert adv["label"] is clean["label"] and adv["image"].shape == clean["image"].shape
        assert float((adv["image"] - clean["image"]).abs().max()) <= 2 / 255 + 1e-6
        assert not torch.equal(adv["image"], clean["image"])


def test_bad_selection_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="criterion"):
        selection_metrics("accuracy", _Threshold(), _items(), RobustEvaluation(),  # type: ignore[arg-type]
                          roi_size=None, overlap=0.25, device=CPU, num_classes=2)
    with pytest.raises(ValidationError, match="select"):
        TrainConfig(select="best")  # type: ignore[arg-type]
    for bad, field in [({"steps": 0}, "steps"), ({"eps": float("nan")}, "eps"), ({"eps": -1.0}, "eps"),
                       ({"attack": "nope"}, "unknown attack"), ({"eps_unit": "mm"}, "eps_unit")]:
        with pytest.raises(ValidationError, match=field):
            TrainConfig(select_attack=bad)


def test_robust_selection_keeps_the_epoch_with_the_best_attacked_score(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, batch_size=2, lr=1e-2, seed=3, select="robust",
                      select_attack={"eps": 8.0, "steps": 3})
    result = fit(tiny_unet(), Recipe(), BlobSegmentation(8), BlobSegmentation(4, seed=1), cfg, tmp_path / "run",
                 classes=["background", "blob"], progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    robust = [float(r["val_robust_score"]) for r in rows]
    clean = [float(r["val_clean_score"]) for r in rows]
    assert [float(r["val_score"]) for r in rows] == pytest.approx(robust)
    assert all(r < c for r, c in zip(robust, clean))  # the attack lowers Dice at every epoch
    assert result.best_metric == pytest.approx(max(robust)) and result.best_epoch == robust.index(max(robust)) + 1
    _, info = load_checkpoint(tmp_path / "run" / "model.json")
    assert info.extra["epoch"] == result.best_epoch and info.extra["train_config"]["select"] == "robust"
    assert info.extra["train_config"]["select_attack"]["eps"] == 8.0
