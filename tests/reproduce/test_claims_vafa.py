"""Claims 1 (VAFA hurts more than voxel attacks) and 2 (VAFT resists VAFA): the per-case Dice with and
without background and the effects on hand-made rows, and a smoke run of each through the CLI."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from medrobust.cli import main
from medrobust.reproduce.claim_vafa import case_dice, voxel_worst
from medrobust.reproduce.claim_vaft import recipe_difference


def _rows(scores: dict[tuple[str, str, float], tuple[float, float]]) -> pd.DataFrame:
    """Grid rows of model m scored with background, from (perturbation, eps, case) -> (background Dice, gm Dice);
    the clean image has background 1.0 and gm 0.8; wm is absent from both (NaN, skipped)."""
    nan = float("nan")
    return pd.DataFrame([{"model": "m", "perturbation": p, "kind": "attack", "eps_stated": e, "case_id": c,
                          "clean_score": 0.9, "adv_score": (bg + gm) / 2,
                          "clean_per_class": {"background": 1.0, "gm": 0.8, "wm": nan},
                          "adv_per_class": {"background": bg, "gm": gm, "wm": nan}}
                         for (p, e, c), (bg, gm) in scores.items()])


def test_case_dice_drops_the_background_and_the_effect_is_the_voxel_worst_case_minus_vafa() -> None:
    scores = {("pgd", 4.0, "a"): (0.98, 0.60), ("fgsm", 4.0, "a"): (0.99, 0.70), ("bim", 4.0, "a"): (0.98, 0.62),
              ("seg-ensemble-short", 4.0, "a"): (0.97, 0.50), ("vafa3d", 20.0, "a"): (0.90, 0.30),
              ("pgd", 4.0, "b"): (0.98, 0.40), ("fgsm", 4.0, "b"): (0.99, 0.70), ("bim", 4.0, "b"): (0.98, 0.45),
              ("seg-ensemble-short", 4.0, "b"): (0.97, 0.55), ("vafa3d", 20.0, "b"): (0.95, 0.50),
              ("pgd", 8.0, "b"): (0.96, 0.35)}  # a second eps: the lowest Dice over eps counts
    fg = case_dice(_rows(scores), background=False).set_index("case_id")
    assert fg["clean"].tolist() == pytest.approx([0.8, 0.8])  # wm's NaN is skipped, the background dropped
    assert fg.loc["b", "pgd"] == pytest.approx(0.35)
    # a: min(0.60, 0.70, 0.62, 0.50) - 0.30 = 0.20; b: min(0.35, 0.70, 0.45, 0.55) - 0.50 = -0.15
    assert (voxel_worst(fg) - fg["vafa3d"]).to_dict() == pytest.approx({"a": 0.20, "b": -0.15})
    with_bg = case_dice(_rows(scores), background=True).set_index("case_id")
    assert with_bg.loc["a", "vafa3d"] == pytest.approx(0.60) and with_bg["clean"].tolist() == [0.9, 0.9]


def test_recipe_difference_pairs_the_recipes_case_by_case_within_a_seed() -> None:
    table = pd.DataFrame([{"recipe": r, "seed": s, "case_id": c, "vafa3d": v} for r, s, c, v in [
        ("vaft", 0, "a", 0.70), ("pgd_at", 0, "a", 0.40), ("vaft", 0, "b", 0.50), ("pgd_at", 0, "b", 0.55),
        ("vaft", 1, "a", 0.60), ("pgd_at", 1, "a", 0.45), ("vaft", 1, "c", 0.90)]])  # c: no PGD-AT pair
    out = recipe_difference(table, "vafa3d", "vaft", "pgd_at").set_index(["seed", "case_id"])["difference"]
    assert out.to_dict() == pytest.approx({(0, "a"): 0.30, (0, "b"): -0.05, (1, "a"): 0.15})


@pytest.mark.slow
@pytest.mark.parametrize(("name", "perturbations"), [
    ("vafa-hurts-more", {"pgd", "fgsm", "bim", "seg-ensemble-short", "vafa3d"}),
    ("vaft-resists-vafa", {"pgd", "vafa3d"}),
])
def test_quick_run_writes_the_rows_of_its_perturbations(name: str, perturbations: set[str], tmp_path: Path) -> None:
    out = tmp_path / "repro"
    assert main(["reproduce", name, "--quick", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / name / "result.json").read_text(encoding="utf-8"))
    assert result["verdict"] == "smoke run" and result["results"]
    assert all(Path(p).is_file() for p in result["results"])
    with sqlite3.connect(result["results"][0]) as db:
        rows = pd.read_sql("SELECT model, perturbation, adv_per_class FROM runs", db)
    assert set(rows["perturbation"]) == perturbations
    assert all(json.loads(v).keys() >= {"background", "gm"} for v in rows["adv_per_class"])  # scored with background
    if name == "vaft-resists-vafa":
        assert set(rows["model"]) == {"vaft-s0", "pgd_at-s0"}
