"""The evaluation core: one (model, perturbation, level, case) -> one Row, used by every runner;
an attack registered from outside medrobust runs through the grid and `medrobust attack`."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from medrobust.attacks import Attack, AttackResult, AttackState, register_attack
from medrobust.cli import main
from medrobust.data.sources import open_split
from medrobust.evaluation.cases import prepare_case, score
from medrobust.evaluation.core import evaluate_run, run_seed
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.specs import AttackSpec, CorruptionSpec
from medrobust.evaluation.store import RUN_COLUMNS, ResultStore
from medrobust.evaluation.types import LoadedModel, Row, RunSettings
from medrobust.models.checkpoint import load_checkpoint
from medrobust.units import expand_to
from tests.evaluation.assets import tiny_grid_assets


class ShiftUp(Attack):
    """A user's own attack: every voxel moved up by eps (clipped to the valid range)."""

    name = "test-shift-up"
    uses_step_size = False

    def __init__(self, budget: Any, steps: int = 1, **options: Any) -> None:  # one step whatever is asked
        super().__init__(budget, steps=1, **options)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        lo, hi = base.budget.range_for(x)
        x_adv = torch.minimum(x + expand_to(base.eps, x), hi).clamp_min(lo)
        with torch.no_grad():
            loss = self.loss_fn(model(x_adv), y, step=1, total_steps=1)
        return AttackResult(x_adv, loss[None], loss, 0.0)


register_attack("test-shift-up")(ShiftUp)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_grid_assets(tmp_path_factory.mktemp("core"), n_test=2)


def loaded(assets: dict[str, Path]) -> LoadedModel:
    model, info = load_checkpoint(assets["checkpoint"])
    return LoadedModel("tiny", model.eval(), info, open_split(assets["datalist"], "test", normalization="zscore"))


def test_a_row_has_exactly_the_store_columns() -> None:
    assert [f.name for f in dataclasses.fields(Row)] != [] and {f.name for f in dataclasses.fields(Row)} == set(RUN_COLUMNS)


def test_score_counts_an_empty_label_and_prediction_as_perfect() -> None:
    y = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    logits = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])[None]
    assert score(logits, y, ["bg", "fg"]).score == 1.0
    wrong = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]
    assert score(wrong, y, ["bg", "fg"]).score == 0.0


def test_attack_and_corruption_runs_give_rows_the_store_takes(assets: dict[str, Path], tmp_path: Path) -> None:
    lm = loaded(assets)
    settings = RunSettings(seed=3, config_hash="h", metrics=frozenset({"ssim", "psnr"}))
    case = prepare_case(lm, lm.split.dataset[0], settings)
    pgd = AttackSpec(attack="pgd", eps=[8], eps_unit="1/255", options={"steps": 2})
    first, again = (evaluate_run(lm, pgd, 8.0, case, settings) for _ in range(2))
    assert torch.equal(first.x, again.x)  # seeded from the run's key
    assert first.row.linf_model <= first.row.eps_model + 1e-6 and first.row.kind == "attack"
    motion = CorruptionSpec(corruption="noise", severities=[3])
    corrupted = evaluate_run(lm, motion, 3.0, case, settings)
    assert corrupted.row.kind == "corruption" and corrupted.row.eps_unit == "severity"
    assert json.loads(corrupted.row.options_json or "{}")["params"]
    with ResultStore(tmp_path / "results.sqlite", "h") as store:
        store.add_run(first.row)
        store.add_run(corrupted.row)
        assert store.done_keys() == {first.row.key, corrupted.row.key}
    assert run_seed(3, "tiny", "pgd", 8.0, case.id) != run_seed(3, "tiny", "pgd", 8.0, "other")


@pytest.mark.slow
def test_a_registered_attack_runs_in_the_grid_and_the_cli(assets: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets["datalist"]), "split": "test"},
           "perturbations": [{"attack": "test-shift-up", "eps": [4], "eps_unit": "1/255"}],
           "out": str(tmp_path / "grid"), "examples": 0}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    with ResultStore(run_grid(tmp_path / "grid.yaml", progress=False) / "results.sqlite") as store:
        grid_rows = store.to_dataframe()
    assert set(grid_rows["attack"]) == {"test-shift-up"} and len(grid_rows) == 2
    assert main(["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]),
                 "--attack", "test-shift-up", "--eps", "4", "--out", str(tmp_path / "cli")]) == 0
    with ResultStore(tmp_path / "cli" / "results.sqlite") as store:
        cli_rows = store.to_dataframe()
    # the same core: the same achieved perturbation and scores for every case
    for column in ("linf_model", "clean_score", "adv_score"):
        assert sorted(cli_rows[column]) == pytest.approx(sorted(grid_rows[column]))
