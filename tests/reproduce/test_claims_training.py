"""Claims 3 (self-adaptive iterations help) and 5 (latent masking helps under corruptions): the cost
matching and per-case effects on hand-made rows, and a smoke run of each through the CLI."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from medrobust.cli import main
from medrobust.reproduce.claim_cooperative import CORRUPTIONS, corruption_dice, relative_gain
from medrobust.reproduce.claim_self_adaptive import attack_iterations, matched_steps, worst_case_dice


def _attack_rows(scores: dict[tuple[str, str, float, str], float]) -> pd.DataFrame:
    """Grid rows from (model, perturbation, eps, case) -> Dice."""
    return pd.DataFrame([{"model": m, "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
                          "eps_unit": "1/255", "eps_stated": e, "case_id": c, "clean_score": 0.9, "adv_score": s}
                         for (m, p, e, c), s in scores.items()])


def test_matched_steps_spend_the_self_adaptive_runs_attack_passes() -> None:
    # 1+1+2+2+3+4 = 13 iterations over 6 epochs: mean 2.17 -> 2 steps, 12 passes per batch (SEAT 13)
    assert matched_steps([1, 1, 2, 2, 3, 4]) == 2
    assert matched_steps([1, 2, 2, 3]) == 2  # mean 2.0
    assert matched_steps([2, 3]) == 3  # a half rounds up (Python's round would give 2)
    assert matched_steps([1, 1, 1, 2]) == 1  # mean 1.25
    with pytest.raises(ValueError, match="attack_iters"):
        matched_steps([])


def test_attack_iterations_are_read_from_the_runs_history(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("epoch,mag,attack_iters,next_attack_iters\n1,0.1,1.0,2.0\n2,0.2,2.0,3.0\n"
                                          "3,0.3,3.0,3.0\n", encoding="utf-8")
    assert attack_iterations(tmp_path / "model.json") == [1.0, 2.0, 3.0]


def test_worst_case_dice_is_the_minimum_over_attacks_at_the_largest_eps() -> None:
    scores = {("seat", "pgd", 4.0, "a"): 0.70, ("seat", "apgd", 4.0, "a"): 0.60,
              ("seat", "pgd", 8.0, "a"): 0.50, ("seat", "apgd", 8.0, "a"): 0.45,
              ("seat", "seg-ensemble-short", 8.0, "a"): 0.30,
              ("seat", "pgd", 4.0, "b"): 0.80, ("seat", "apgd", 4.0, "b"): 0.85,
              ("seat", "pgd", 8.0, "b"): 0.40, ("seat", "apgd", 8.0, "b"): 0.50,
              ("seat", "seg-ensemble-short", 8.0, "b"): 0.60}
    out = worst_case_dice(_attack_rows(scores)).set_index("case_id")["worst"]
    # 4/255 rows do not count; at 8/255 a: min(0.50, 0.45, 0.30) = 0.30, b: min(0.40, 0.50, 0.60) = 0.40
    assert out.to_dict() == pytest.approx({"a": 0.30, "b": 0.40})


def test_corruption_dice_averages_and_takes_the_worst_corruption_per_case() -> None:
    rows = pd.DataFrame([{"model": m, "kind": k, "case_id": c, "adv_score": s} for m, k, c, s in [
        ("on", "corruption", "a", 0.8), ("on", "corruption", "a", 0.4), ("on", "corruption", "a", 0.6),
        ("on", "attack", "a", 0.0),  # PGD rows do not enter the corruption mean
        ("off", "corruption", "a", 0.5), ("off", "corruption", "a", 0.1), ("off", "corruption", "a", 0.3)]])
    out = corruption_dice(rows).set_index("model")
    assert out.loc["on", "mean"] == pytest.approx(0.6) and out.loc["on", "worst"] == pytest.approx(0.4)
    assert out.loc["off", "mean"] == pytest.approx(0.3) and out.loc["off", "worst"] == pytest.approx(0.1)
    assert relative_gain(0.6, 0.3) == pytest.approx(1.0)  # (0.6 - 0.3) / 0.3
    assert relative_gain(0.46, 0.4) == pytest.approx(0.15)
    assert math.isnan(relative_gain(0.5, 0.0))


def _run_quick(name: str, tmp_path: Path) -> tuple[dict[str, object], pd.DataFrame]:
    out = tmp_path / "repro"
    assert main(["reproduce", name, "--quick", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / name / "result.json").read_text(encoding="utf-8"))
    assert result["verdict"] == "smoke run" and result["results"]
    assert all(Path(p).is_file() for p in result["results"])
    frames = []
    for path in result["results"]:
        with sqlite3.connect(path) as db:
            frames.append(pd.read_sql("SELECT model, perturbation, kind, eps_stated FROM runs", db))
    return result, pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_quick_run_of_self_adaptive_writes_attack_rows_of_both_models(tmp_path: Path) -> None:
    result, rows = _run_quick("self-adaptive-helps", tmp_path)
    assert set(rows["model"]) == {"seat-s0", "pgd_at-s0"}
    pairs = set(zip(rows["perturbation"], rows["eps_stated"]))
    assert pairs == {("pgd", 4.0), ("pgd", 8.0), ("apgd", 8.0), ("seg-ensemble-short", 8.0)}
    assert "PGD-AT" in " ".join(result["notes"])  # type: ignore[arg-type]


@pytest.mark.slow
def test_quick_run_of_cooperative_writes_corruption_and_pgd_rows(tmp_path: Path) -> None:
    result, rows = _run_quick("cooperative-corruptions", tmp_path)
    assert set(rows["model"]) == {"masking-on-s0", "masking-off-s0"}
    corrupted = rows[rows["kind"] == "corruption"]
    assert set(corrupted["perturbation"]) == set(CORRUPTIONS) and set(corrupted["eps_stated"]) == {5.0}
    assert set(rows.loc[rows["kind"] == "attack", "perturbation"]) == {"pgd"}
    assert "relative" in str(result["ours_published"])
