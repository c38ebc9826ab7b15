"""Robustness math on synthetic results: curves, worst case, normalised AUC, checks."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.evaluation import robustness as rb

EPS = [2.0, 4.0, 8.0]


def synthetic(scores: dict[tuple[str, float, str], float], clean: dict[str, float],
              unit: str = "1/255", model: str = "m") -> pd.DataFrame:
    """Rows from {(attack, eps, case): adv Dice}; per-class Dice = (score, score / 2)."""
    rows = []
    for (attack, eps, case), s in scores.items():
        rows.append({"model": model, "perturbation": attack, "attack": attack, "kind": "attack", "norm": "linf",
                     "eps_unit": unit, "eps_stated": eps, "case_id": case, "task": "segmentation",
                     "clean_score": clean[case], "adv_score": s,
                     "clean_per_class": {"gm": clean[case], "wm": clean[case] / 2},
                     "adv_per_class": {"gm": s, "wm": s / 2}, "label": None,
                     "loss_initial": 1.0, "loss_best": 2.0 + eps, "ssim": 1 - eps / 100, "psnr": 40 - eps,
                     "linf_model": eps / 255, "l2_model": eps, "linf_raw": eps, "l2_raw": eps,
                     "attack_seconds": 0.1})
    return pd.DataFrame(rows)


def test_worst_case_is_min_over_attacks_per_case() -> None:
    clean = {"a": 0.9, "b": 0.8}
    scores = {("pgd", 4.0, "a"): 0.5, ("pgd", 4.0, "b"): 0.2, ("square", 4.0, "a"): 0.3, ("square", 4.0, "b"): 0.6}
    df = synthetic(scores, clean)
    per_case = rb.worst_case_per_case(df).set_index("case_id")
    assert per_case.loc["a", "score"] == 0.3 and per_case.loc["a", "worst_attack"] == "square"
    assert per_case.loc["b", "score"] == 0.2 and per_case.loc["b", "worst_attack"] == "pgd"
    curve = rb.worst_case_curve(df)
    # clean point prepended at eps 0, then the mean of the per-case minima (0.25 < both attacks' 0.35, 0.45)
    assert curve["eps_stated"].tolist() == [0.0, 4.0]
    assert curve["score"].tolist() == pytest.approx([0.85, 0.25])
    assert curve["attacks"].iloc[0] == "pgd, square"


def test_normalised_auc_formula() -> None:
    # trapezoid over [0, 8] of (1, 0.5, 0.5, 0) at eps (0, 2, 4, 8): 1.5 + 1 + 1 = 3.5; / 8
    assert rb.normalised_auc([0, 2, 4, 8], [1, 0.5, 0.5, 0]) == pytest.approx(3.5 / 8)
    assert rb.normalised_auc([8, 0], [0.0, 1.0]) == pytest.approx(0.5)  # order does not matter
    assert rb.normalised_auc([0], [0.7]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="at least one"):
        rb.normalised_auc([], [])


def test_auc_table_uses_clean_point() -> None:
    clean = {"a": 1.0}
    df = synthetic({("pgd", 8.0, "a"): 0.0}, clean)
    auc = rb.auc_table(df).set_index("curve")
    assert auc.loc["pgd", "auc"] == pytest.approx(0.5)
    assert auc.loc["worst case", "auc"] == pytest.approx(0.5)


def test_groups_never_mix_units() -> None:
    clean = {"a": 0.9}
    df = pd.concat([synthetic({("pgd", 4.0, "a"): 0.5}, clean, unit="1/255"),
                    synthetic({("pgd-hu", 4.0, "a"): 0.1}, clean, unit="HU")])
    curve = rb.worst_case_curve(df)
    at4 = curve[curve["eps_stated"] == 4.0].set_index("eps_unit")["score"]
    assert at4["1/255"] == pytest.approx(0.5) and at4["HU"] == pytest.approx(0.1)


def test_worst_case_uses_only_cases_every_attack_finished() -> None:
    clean = {"a": 0.9, "b": 0.9}
    df = synthetic({("pgd", 4.0, "a"): 0.5, ("square", 4.0, "a"): 0.6, ("square", 4.0, "b"): 0.1}, clean)
    per_case = rb.worst_case_per_case(df)
    assert per_case["case_id"].tolist() == ["a"]


def test_per_class_takes_min_per_class() -> None:
    clean = {"a": 0.8}
    df = synthetic({("pgd", 4.0, "a"): 0.4, ("square", 4.0, "a"): 0.6}, clean)
    df.at[1, "adv_per_class"] = {"gm": 0.6, "wm": 0.1}  # square: worse on wm only
    table = rb.per_class_table(df).set_index("class")
    assert table.loc["gm", "worst"] == pytest.approx(0.4)
    assert table.loc["wm", "worst"] == pytest.approx(0.1)
    assert table.loc["gm", "clean"] == pytest.approx(0.8)


def test_per_class_classification_by_label() -> None:
    df = synthetic({("pgd", 4.0, "a"): 0.0, ("pgd", 4.0, "b"): 1.0}, {"a": 1.0, "b": 1.0})
    df["task"], df["label"] = "classification", [0, 1]
    table = rb.per_class_table(df, {"m": ["healthy", "tumour"]}).set_index("class")
    assert table.loc["healthy", "worst"] == 0.0 and table.loc["tumour", "worst"] == 1.0


def test_masking_checks_flag_black_box_and_flat_loss() -> None:
    clean = {"a": 0.9}
    df = synthetic({("pgd", 4.0, "a"): 0.7, ("square", 4.0, "a"): 0.2, ("fgsm", 4.0, "a"): 0.1}, clean)
    df.loc[df["attack"] == "fgsm", "loss_best"] = 1.0  # never above the initial loss
    checks = {r["attack"]: r for r in rb.masking_checks(df)}
    assert checks["pgd"]["likely_masking"] and "black-box square" in checks["pgd"]["reasons"]
    assert checks["fgsm"]["likely_masking"] and "initial loss" in checks["fgsm"]["reasons"]
    assert not checks["square"]["likely_masking"]


def test_masking_check_flags_score_rising_with_eps() -> None:
    df = synthetic({("pgd", 2.0, "a"): 0.2, ("pgd", 8.0, "a"): 0.6}, {"a": 0.9})
    (check,) = rb.masking_checks(df)
    assert check["likely_masking"] and "rises with eps" in check["reasons"]


def test_headline_and_quality() -> None:
    clean = {"a": 0.82, "b": 0.82}
    scores = {(a, e, c): (0.8 - e / 10 if a == "pgd" else 0.8 - e / 20) for a, e, c in
              itertools.product(["pgd", "square"], EPS, ["a", "b"])}
    head = rb.headline(synthetic(scores, clean)).iloc[0]
    assert head["eps"] == 8.0 and head["clean"] == pytest.approx(0.82)
    assert head["worst"] == pytest.approx(0.0) and head["strongest"] == "pgd" and head["n_attacks"] == 2
    q = rb.quality_table(synthetic(scores, clean))
    assert set(q["perturbation"]) == {"pgd", "square"} and q["psnr"].max() == pytest.approx(38.0)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=18, max_size=18), st.lists(st.floats(0, 1), min_size=2, max_size=2))
def test_worst_case_never_above_any_attack(values: list[float], clean_vals: list[float]) -> None:
    keys = list(itertools.product(["pgd", "apgd", "square"], EPS, ["a", "b"]))
    df = synthetic(dict(zip(keys, values)), dict(zip(["a", "b"], clean_vals)))
    worst = rb.worst_case_curve(df).set_index("eps_stated")["score"]
    curves = rb.attack_curves(df)
    for eps, g in curves.groupby("eps_stated"):
        assert (worst[eps] <= g["score"] + 1e-12).all()
    auc = rb.auc_table(df).set_index("curve")["auc"]
    assert (auc["worst case"] <= auc.drop("worst case") + 1e-12).all()
    assert np.isfinite(auc).all()
