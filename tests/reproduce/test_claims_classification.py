"""Claims 6 (domain assimilation) and 7 (ensemble voting): their per-case effects on hand-made rows, the
balanced test list, and a quick run of each through the command line."""
from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from medrobust.cli import main
from medrobust.data.demo import build_demo_classification
from medrobust.reproduce.claim_assimilation import case_robust_accuracy, case_table, setup_effect
from medrobust.reproduce.claim_ensemble import case_protocols
from medrobust.reproduce.claims import ClaimContext


def _attack_row(model: str, attack: str, eps: float, case: str, adv: float) -> dict[str, object]:
    return {"model": model, "perturbation": attack, "attack": attack, "kind": "attack", "norm": "linf",
            "eps_unit": "1/255", "eps_stated": eps, "case_id": case, "clean_score": 1.0, "adv_score": adv}


def test_case_robust_accuracy_is_the_worst_attack_per_eps_averaged_over_eps() -> None:
    rows = [  # case a: pgd breaks it at 2 and 8, fgsm at 4 -> worst 1, 0, 0, 0 -> 0.25
        *(_attack_row("m", "pgd", e, "a", s) for e, s in ((1.0, 1.0), (2.0, 0.0), (4.0, 1.0), (8.0, 0.0))),
        *(_attack_row("m", "fgsm", e, "a", s) for e, s in ((1.0, 1.0), (2.0, 1.0), (4.0, 0.0), (8.0, 1.0))),
        *(_attack_row("m", "autoattack", e, "a", 1.0) for e in (1.0, 2.0, 4.0, 8.0)),
        # case b: never broken by pgd, broken by autoattack at 8 only
        *(_attack_row("m", "pgd", e, "b", 1.0) for e in (1.0, 2.0, 4.0, 8.0)),
        *(_attack_row("m", "fgsm", e, "b", 1.0) for e in (1.0, 2.0, 4.0, 8.0)),
        *(_attack_row("m", "autoattack", e, "b", 0.0 if e == 8.0 else 1.0) for e in (1.0, 2.0, 4.0, 8.0)),
    ]
    df = pd.DataFrame(rows)
    published = case_robust_accuracy(df, ["pgd", "fgsm"]).set_index("case_id")["robust"]
    strongest = case_robust_accuracy(df, ["pgd", "fgsm", "autoattack"]).set_index("case_id")["robust"]
    pgd = case_robust_accuracy(df, ["pgd"]).set_index("case_id")["robust"]
    assert published.to_dict() == {"a": 0.25, "b": 1.0}
    assert strongest.to_dict() == {"a": 0.25, "b": 0.75}
    assert pgd.to_dict() == {"a": 0.5, "b": 1.0}


def test_case_table_holds_each_attack_the_published_and_the_strongest_worst_case() -> None:
    broken = {("bim", 8.0), ("autoattack", 2.0)}  # each breaks the case at one eps; the others never do
    df = pd.DataFrame([_attack_row("m", a, e, "a", 0.0 if (a, e) in broken else 1.0)
                       for a in ("fgsm", "bim", "mifgsm", "pgd", "autoattack") for e in (2.0, 8.0)])
    row = case_table(df, ["fgsm", "bim", "mifgsm", "pgd", "autoattack"]).iloc[0]
    assert (row["clean_score"], row["fgsm"], row["bim"], row["mifgsm"], row["pgd"]) == (1.0, 1.0, 0.5, 1.0, 1.0)
    assert (row["published"], row["robust"]) == (0.5, 0.0)


def test_setup_effect_is_assimilation_minus_transfer_per_case_and_seed() -> None:
    table = pd.DataFrame({"setup": ["transfer", "assimilation"] * 3, "seed": [0, 0, 0, 0, 1, 1],
                          "case_id": ["a", "a", "b", "b", "a", "a"],
                          "robust": [0.25, 1.0, 0.5, 0.25, 0.0, 0.75]})
    diff = setup_effect(table, "robust")
    assert diff.to_dict() == {(0, "a"): 0.75, (0, "b"): -0.25, (1, "a"): 0.75}


def _ensemble_row(setting: str, eps: float, case: str, label: int, vote: int, members: dict[str, int],
                  perturbation: str = "pgd") -> dict[str, object]:
    return {"model": "ens", "perturbation": perturbation, "eps_stated": eps, "setting": setting, "case_id": case,
            "label": label, "hard_vote": vote, "soft_vote": vote, "mean_logits": vote,
            "members_json": json.dumps(members)}


def test_case_protocols_scores_the_vote_under_transfer_and_the_worst_joint_attack() -> None:
    rows = [
        _ensemble_row("clean", 0.0, "c", 1, 1, {"a": 1, "b": 1}),
        # transfer: from a the vote holds at 4 and 8 (a itself fooled at both), from b the vote falls at 8
        _ensemble_row("transfer from a", 4.0, "c", 1, 1, {"a": 0, "b": 1}),
        _ensemble_row("transfer from a", 8.0, "c", 1, 1, {"a": 0, "b": 1}),
        _ensemble_row("transfer from b", 4.0, "c", 1, 1, {"a": 1, "b": 1}),
        _ensemble_row("transfer from b", 8.0, "c", 1, 0, {"a": 0, "b": 0}),
        # joint: at 4 only the mean-probs mode (fgsm) fools the vote, at 8 both modes do
        _ensemble_row("joint (mean logits)", 4.0, "c", 1, 1, {"a": 1, "b": 0}),
        _ensemble_row("joint (mean probs)", 4.0, "c", 1, 0, {"a": 0, "b": 0}, perturbation="fgsm"),
        _ensemble_row("joint (mean logits)", 8.0, "c", 1, 0, {"a": 0, "b": 0}),
        _ensemble_row("joint (mean probs)", 8.0, "c", 1, 0, {"a": 0, "b": 0}),
        # a second case the attacks never move
        _ensemble_row("clean", 0.0, "d", 0, 0, {"a": 0, "b": 0}),
        _ensemble_row("transfer from a", 4.0, "d", 0, 0, {"a": 0, "b": 0}),
        _ensemble_row("joint (mean logits)", 4.0, "d", 0, 0, {"a": 0, "b": 0}),
    ]
    out = case_protocols(pd.DataFrame(rows)).set_index("case_id")
    # member alone on its own images: a at 4 and 8 wrong, b at 4 right, at 8 wrong -> 1 of 4
    assert out.loc["c", ["clean", "member", "published", "joint"]].tolist() == [1.0, 0.25, 0.75, 0.0]
    assert out.loc["d", ["clean", "member", "published", "joint"]].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_balanced_test_alternates_the_classes(tmp_path: Path) -> None:
    data = build_demo_classification(tmp_path / "data", n_train=2, n_val=2, n_test=6, size=16)
    ctx = ClaimContext(tmp_path / "claim", tmp_path / "models")
    path = ctx.balanced_test(data, 4)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["healthy", "lesion", "healthy", "lesion"]
    assert all(Path(r["image"]).is_file() and r["split"] == "test" for r in rows)
    stamp = path.stat().st_mtime_ns
    assert ctx.balanced_test(data, 4) == path and path.stat().st_mtime_ns == stamp  # unchanged: not rewritten


@pytest.mark.slow
@pytest.mark.parametrize(("claim", "table", "expected"), [
    ("assimilation-helps", "runs", {"fgsm", "bim", "mifgsm", "pgd", "autoattack-short"}),
    ("ensemble-voting", "ensemble_runs", {"clean", "fgsm", "pgd"}),
])
def test_quick_run_writes_its_rows_and_a_smoke_result(claim: str, table: str, expected: set[str],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "repro"
    assert main(["reproduce", claim, "--quick", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / claim / "result.json").read_text(encoding="utf-8"))
    assert result["verdict"] == "smoke run" and result["results"]
    for store in result["results"]:
        assert Path(store).is_file()
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            found = {p for (p,) in con.execute(f"SELECT DISTINCT perturbation FROM {table}")}
            cases = {c for (c,) in con.execute(f"SELECT DISTINCT case_id FROM {table}")}
        finally:
            con.close()
        assert found == expected
        assert {c.split("/")[0] for c in cases} == {"healthy", "lesion"}  # both classes among the cases
