"""``--log tensorboard`` on train and evaluate writes event files that TensorBoard reads back (issue 17)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from medrobust.cli import main
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.evaluation.store import ResultStore
from medrobust.report.summary import summary_scalars

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tracking")
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=4, n_val=2, n_test=2) / "dataset.json"
    out = root / "run"
    assert main(["train", "--data", str(data), "--model", "unet", "--out", str(out), "--epochs", "2", "--lr", "0.01",
                 "--model-kwargs", TINY_UNET, "--recipe", "self_adaptive", "--params", '{"check_every": 1}',
                 "--log", "tensorboard"]) == 0
    return data, out


def test_train_logs_every_epoch_row_of_the_history(run: tuple[Path, Path]) -> None:
    _, out = run
    scalars = _scalars(out / "tensorboard")
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    for key in ("train_loss", "val_score", "mag", "attack_iters"):  # losses, validation, the self-adaptive schedule
        assert [step for step, _ in scalars[key]] == [1, 2], key
        assert [v for _, v in scalars[key]] == pytest.approx([float(r[key]) for r in history], rel=1e-6), key


def test_evaluate_logs_the_grids_summary(run: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = run
    grid = {"models": [{"name": "tiny", "checkpoint": str(out / "model.json")}],
            "data": {"datalist": str(data), "split": "test"},
            "perturbations": [{"attack": "fgsm", "eps": [4, 8], "eps_unit": "1/255"}], "out": "results", "examples": 0}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    assert main(["evaluate", str(tmp_path / "grid.yaml"), "--no-report", "--no-progress", "--log", "tensorboard"]) == 0
    results = tmp_path / "results"
    with ResultStore(results / "results.sqlite") as store:
        expected = summary_scalars(store.to_dataframe())
    scalars = _scalars(results / "tensorboard")
    assert {"tiny/clean", "tiny/fgsm/4", "tiny/fgsm/8", "tiny/worst_case/linf 1/255"} <= set(scalars)
    for tag, value in expected.items():
        assert scalars[tag][0][1] == pytest.approx(value, rel=1e-6), tag


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_unknown_or_missing_tracker_exits_2_naming_the_flag(run: tuple[Path, Path], tmp_path: Path,
                                                                 command: str, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = run
    target = tmp_path / "out"
    if command == "train":
        args = ["train", "--data", str(data), "--out", str(target), "--epochs", "1", "--log", "wandb"]
    else:
        grid = {"models": [{"name": "tiny", "checkpoint": str(out / "model.json")}],
                "data": {"datalist": str(data), "split": "test"},
                "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}], "out": str(target)}
        (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
        args = ["evaluate", str(tmp_path / "grid.yaml"), "--log", "wandb"]
    assert main(args) == 2
    assert "--log" in capsys.readouterr().err and not target.exists()
