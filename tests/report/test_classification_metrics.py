"""The classification metrics table: AUROC from the stored probability vectors for any class
count, the two-class fallback for stores without them, and a store that gains the columns."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

from medrobust import metrics
from medrobust.evaluation.store import ResultStore
from medrobust.report.classification import metrics_and_confusion


def _runs(probs: list[list[float]], labels: list[int], keep_vectors: bool = True) -> pd.DataFrame:
    rows = []
    for i, (p, label) in enumerate(zip(probs, labels)):
        pred = max(range(len(p)), key=p.__getitem__)
        rows.append({"model": "clf", "kind": "attack", "attack": "pgd", "perturbation": "pgd", "norm": "linf",
                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": f"c{i}", "label": label,
                     "clean_score": float(pred == label), "adv_score": float(pred == label),
                     "clean_pred": pred, "adv_pred": pred, "clean_prob": p[label], "adv_prob": p[label],
                     "clean_probs": p if keep_vectors else None, "adv_probs": p if keep_vectors else None})
    return pd.DataFrame(rows)


PROBS = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.4, 0.35, 0.25], [0.3, 0.3, 0.4], [0.2, 0.6, 0.2],
         [0.25, 0.45, 0.3], [0.5, 0.3, 0.2]]
LABELS = [0, 1, 2, 1, 2, 1, 0, 2]


def _auroc_cell(df: pd.DataFrame, k: int) -> str:
    table, _ = metrics_and_confusion(df, {"clf": {"classes": [str(i) for i in range(k)]}})
    assert table is not None and table["headers"][-1] == "AUROC"
    return table["rows"][0][-1]


def test_auroc_for_three_classes_comes_from_the_probability_vectors() -> None:
    expected = metrics.auroc(torch.tensor(PROBS, dtype=torch.float64), torch.tensor(LABELS), from_logits=False)
    assert 0.5 < expected < 1.0  # not a trivial table
    assert _auroc_cell(_runs(PROBS, LABELS), 3) == f"{expected:.3f}"
    assert _auroc_cell(_runs(PROBS, LABELS, keep_vectors=False), 3) == "-"  # an old store: no vectors


def test_two_classes_without_vectors_fall_back_to_the_true_class_probability() -> None:
    probs = [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]]
    labels = [0, 1, 1, 0]
    expected = metrics.auroc(torch.tensor(probs, dtype=torch.float64), torch.tensor(labels), from_logits=False)
    assert _auroc_cell(_runs(probs, labels, keep_vectors=False), 2) == f"{expected:.3f}"
    assert _auroc_cell(_runs(probs, labels), 2) == f"{expected:.3f}"


def test_a_store_from_before_the_probability_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, "
                "perturbation TEXT NOT NULL, eps_stated REAL NOT NULL, case_id TEXT NOT NULL, clean_prob REAL)")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.commit()
    con.close()
    with ResultStore(path) as store:
        columns = {row[1] for row in store.con.execute("PRAGMA table_info(runs)")}
    assert {"clean_probs", "adv_probs", "clean_prob"} <= columns


@pytest.mark.parametrize("k", [2, 3])
def test_the_grid_scores_store_the_whole_probability_vector(k: int) -> None:
    from medrobust.evaluation.cases import score

    logits = torch.randn(1, k, dtype=torch.float64)
    out = score(logits, torch.tensor([1]), [str(i) for i in range(k)], None, hd=False)
    assert out.probs is not None and len(out.probs) == k and sum(out.probs) == pytest.approx(1.0)
    assert out.prob == pytest.approx(out.probs[1])
