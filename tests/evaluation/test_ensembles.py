"""Ensemble evaluation: the three scorings, transfer vs joint attack, the table, the grid rows."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from medrobust.attacks import PGD
from medrobust.evaluation.ensembles import ensemble_table, evaluate_ensemble, load_ensemble_runs, member_names
from medrobust.evaluation.store import ResultStore
from medrobust.models import Ensemble
from medrobust.units import Budget


class Fixed(nn.Module):
    """Fixed logits (1, K) for any image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor([logits])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


class Band(nn.Module):
    """Class 0 while the mean of its band of columns stays below 0.6, else class 1."""

    def __init__(self, band: slice) -> None:
        super().__init__()
        self.band = band

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[..., self.band].mean((1, 2, 3))
        return torch.stack([10 * (0.6 - m), torch.zeros_like(m)], 1)


def test_hard_vote_soft_vote_and_mean_logits_can_disagree() -> None:
    # two members barely for class 1, one sure of class 0: majority 1; mean probs and mean logits 0
    ens = Ensemble([Fixed([0.0, 0.1]), Fixed([0.0, 0.1]), Fixed([10.0, 0.0])])
    rows = evaluate_ensemble(ens, torch.zeros(2, 1, 4, 4), torch.tensor([1, 0]), None, names=["a", "b", "c"])
    assert list(rows["setting"]) == ["clean", "clean"]
    assert list(rows["hard_vote"]) == [1, 1] and list(rows["soft_vote"]) == [0, 0] and list(rows["mean_logits"]) == [0, 0]
    assert json.loads(rows["members_json"][0]) == {"a": 1, "b": 1, "c": 0}
    table = ensemble_table(rows.assign(model="ens", perturbation="clean", eps_stated=0.0))
    assert table.loc[0, "hard_vote"] == 0.5 and table.loc[0, "members"] == {"a": 0.5, "b": 0.5, "c": 0.5}


def test_transfer_from_one_member_leaves_the_vote_but_the_joint_attack_breaks_it() -> None:
    ens = Ensemble([Band(slice(0, 3)), Band(slice(3, 6)), Band(slice(6, 9))])
    x, y = torch.full((2, 1, 4, 9), 0.5), torch.zeros(2, dtype=torch.long)
    attack = PGD(Budget.linf(0.3, valid_range=(0.0, 1.0)), steps=5, random_start=False)
    rows = evaluate_ensemble(ens, x, y, attack, names=["left", "mid", "right"], seed=0)
    t = ensemble_table(rows.assign(model="ens", perturbation="pgd", eps_stated=0.3)).set_index("setting")
    assert list(t.index) == ["transfer from left", "transfer from mid", "transfer from right",
                             "joint (mean logits)", "joint (mean probs)"]
    left = t.loc["transfer from left"]
    assert left["members"] == {"left": 0.0, "mid": 1.0, "right": 1.0}  # white-box on its source only
    assert left["hard_vote"] == 1.0  # one fooled member of three: the majority holds
    for joint in ("joint (mean logits)", "joint (mean probs)"):
        assert t.loc[joint, "hard_vote"] == 0.0 and t.loc[joint, "mean_logits"] == 0.0


def test_member_names_come_from_the_checkpoint_or_the_architecture() -> None:
    ens = Ensemble([Fixed([0.0, 1.0]), Fixed([1.0, 0.0])])
    assert member_names(ens, {"members": [{"name": "r18"}, {"name": "d121"}]}) == ["r18", "d121"]
    assert member_names(ens) == ["Fixed#0", "Fixed#1"]


def test_rows_round_trip_through_the_store_and_keep_the_first_write(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    assert load_ensemble_runs(store).empty
    rows = evaluate_ensemble(Ensemble([Fixed([0.0, 1.0]), Fixed([1.0, 0.0])]), torch.zeros(1, 1, 2, 2),
                             torch.tensor([1]), None, names=["a", "b"], case_ids=["c1"])
    keys = {"model": "ens", "perturbation": "clean", "eps_stated": 0.0}
    with ResultStore(store) as opened:
        opened.add_ensemble_rows(rows, keys)
        opened.add_ensemble_rows(rows.assign(hard_vote=0), keys)  # same key: ignored
        assert opened.ensemble_done_keys("ens") == {("clean", 0.0, "c1")}
    back = load_ensemble_runs(store)
    assert len(back) == 1 and back.loc[0, "hard_vote"] == int(rows.loc[0, "hard_vote"]) and back.loc[0, "case_id"] == "c1"


@pytest.mark.slow
def test_grid_writes_ensemble_rows_and_resumes(tmp_path: Path) -> None:
    from medrobust.data.io import write_png
    from medrobust.data.phantoms import phantom_classification
    from medrobust.evaluation.grid import run_grid
    from medrobust.models import build_model, save_checkpoint

    images, labels = phantom_classification((32, 32), num_classes=2, seed=1, batch=2)
    for i, (img, k) in enumerate(zip(images, labels)):
        write_png(tmp_path / "data" / "test" / ("healthy", "lesion")[int(k)] / f"c{i}.png", (img[0] * 255).clamp(0, 255))
    torch.manual_seed(0)
    members = [build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.125)
               for _ in range(2)]
    ckpt = save_checkpoint(tmp_path / "ens", Ensemble(members), classes=["healthy", "lesion"],
                           extra={"members": [{"name": "r18a"}, {"name": "r18b"}]})
    cfg = {"models": [{"name": "ens", "checkpoint": str(ckpt)}], "data": {"datalist": str(tmp_path / "data"), "split": "test"},
           "perturbations": [{"attack": "fgsm", "eps": [4, 8], "eps_unit": "1/255"}],
           "out": str(tmp_path / "results"), "examples": 0}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    out = run_grid(tmp_path / "grid.yaml", progress=False)
    runs = load_ensemble_runs(out / "results.sqlite")
    assert len(runs) == 2 * (1 + 2 * 4)  # cases x (clean + eps x (2 transfers + 2 joint))
    assert set(runs["setting"]) == {"clean", "transfer from r18a", "transfer from r18b", "joint (mean logits)",
                                    "joint (mean probs)"}
    table = ensemble_table(runs)
    assert isinstance(table, pd.DataFrame) and table["n_cases"].eq(2).all() and table["hard_vote"].between(0, 1).all()
    run_grid(tmp_path / "grid.yaml", progress=False)  # resume: nothing new
    assert len(load_ensemble_runs(out / "results.sqlite")) == len(runs)
