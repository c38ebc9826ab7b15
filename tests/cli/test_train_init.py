"""`medrobust train --init CHECKPOINT`: fine-tunes from the checkpoint's weights; a checkpoint of
another architecture exits 2 with a message naming --init, before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.models import build_model, save_checkpoint

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_init")
    return build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=2, n_val=1, n_test=1) / "dataset.json"


def _train(data: Path, out: Path, init: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--init", str(init), *extra])


def test_train_init_records_the_checkpoint(data: Path, tmp_path: Path) -> None:
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, **json.loads(TINY_UNET))
    save_checkpoint(tmp_path / "clean", net, classes=["background", "a", "b"])
    assert _train(data, tmp_path / "run", tmp_path / "clean", "--model-kwargs", TINY_UNET) == 0
    assert json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))["extra"]["init"] == str(tmp_path / "clean")


def test_train_init_of_another_architecture_exits_2(data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, **json.loads(TINY_UNET))
    save_checkpoint(tmp_path / "clean", net, classes=["background", "a", "b"])
    assert _train(data, tmp_path / "run", tmp_path / "clean", "--model", "basicunet") == 2
    err = capsys.readouterr().err
    assert "--init" in err and "'unet'" in err and "'basicunet'" in err
    assert not (tmp_path / "run").exists()
