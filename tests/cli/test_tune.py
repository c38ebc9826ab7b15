"""`medrobust tune` end to end on a tiny phantom set: study, resume, best parameters that
`medrobust train --params` accepts, and bad input that exits 2 without writing."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.data.phantoms import build_phantom_segmentation

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    return build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=4, n_val=2, n_test=1) / "dataset.json"


def _tune(data: Path, out: Path, *extra: str) -> int:
    return main(["tune", "--data", str(data), "--out", str(out), "--recipe", "pgd_at", "--epochs", "1",
                 "--model-kwargs", TINY_UNET, "--space", "lr,adv_weight,steps", "--ranges", '{"steps": [1, 2]}',
                 "--eval-steps", "2", *extra])


def test_tune_writes_a_resumable_study_and_best_parameters(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert _tune(data, out, "--trials", "2") == 0
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    best = json.loads((out / "best_params.json").read_text(encoding="utf-8"))
    assert set(best) == {"lr", "adv_weight", "steps"} and 1 <= best["steps"] <= 2 and 0.2 <= best["adv_weight"] <= 0.8
    values = [float(r["value"]) for r in rows]
    best_row = rows[values.index(max(values))]
    assert float(best_row["params_lr"]) == pytest.approx(best["lr"])
    assert all((out / "trials" / f"trial_{i:04d}" / "model.json").exists() for i in range(2))

    assert _tune(data, out, "--trials", "3") == 0  # the rerun adds only the missing trial
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3
    searched = [(r["params_lr"], r["params_adv_weight"], r["params_steps"]) for r in rows]
    assert searched[2] not in searched[:2]  # the resumed study proposes new parameters, not trial 0's again
    best = json.loads((out / "best_params.json").read_text(encoding="utf-8"))  # the new trial may have become the best

    run = tmp_path / "retrained"
    assert main(["train", "--data", str(data), "--out", str(run), "--recipe", "pgd_at", "--epochs", "1",
                 "--model-kwargs", TINY_UNET, "--params", str(out / "best_params.json")]) == 0
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert meta["recipe"] == "pgd_at"
    assert meta["extra"]["recipe_params"]["adv_weight"] == pytest.approx(best["adv_weight"])
    assert meta["extra"]["train_config"]["lr"] == pytest.approx(best["lr"])  # --params wins over --lr


@pytest.mark.parametrize("flag, value, expect", [
    ("--objective", "accuracy", "--objective"),
    ("--space", "beta", "no parameter 'beta'"),
    ("--ranges", '{"lr": [1, 0.1]}', "low < high"),
    ("--params", '{"steps": 3}', "also searched"),
    ("--recipe", "nope", "unknown recipe"),
])
def test_bad_tune_arguments_exit_2_and_write_nothing(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     flag: str, value: str, expect: str) -> None:
    out = tmp_path / "study"
    args = ["tune", "--data", str(data), "--out", str(out), "--space", "lr,steps", flag, value]
    assert main(args) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_missing_dataset_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    assert main(["tune", "--data", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert "none.json" in capsys.readouterr().err
    assert not out.exists()
