"""``train_model``: the initial weights follow the seed only; splits that disagree are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrobust.data.io import write_png
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.training import TrainConfig, train_model

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'


@pytest.mark.slow
def test_training_twice_in_one_process_gives_the_same_model(tmp_path: Path) -> None:
    data = build_phantom_segmentation(tmp_path / "data", shape=(16, 16, 16), n_train=4, n_val=2, n_test=2)
    for name in ("a", "b"):
        torch.rand(7)  # what ran before in this process must not change the initial weights
        train_model(data / "dataset.json", "unet", tmp_path / name, model_kwargs=json.loads(TINY_UNET),
                    config=TrainConfig(epochs=1, lr=0.01), progress=False)
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_val_split_with_other_classes_is_refused_before_training(tmp_path: Path) -> None:
    for split, classes in (("train", ("healthy", "lesion")), ("val", ("healthy", "tumour"))):
        for k, name in enumerate(classes):
            write_png(tmp_path / "data" / split / name / "0.png", torch.full((16, 16), 40.0 + 100 * k))
    with pytest.raises(ValueError, match="the train split has classes .* but the val split has"):
        train_model(tmp_path / "data", "resnet18", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
