"""``train_model``: the initial weights follow the seed only, or a checkpoint (``--init``);
splits that disagree and checkpoints that do not fit are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrobust.data.io import write_png
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.training import TrainConfig, train_model
from medrobust.training.state import load_state

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


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init")
    return build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=4, n_val=2, n_test=1) / "dataset.json"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_init_starts_from_the_checkpoint_with_a_fresh_optimizer(phantoms: Path, tmp_path: Path) -> None:
    kwargs = json.loads(TINY_UNET)
    train_model(phantoms, "unet", tmp_path / "clean", model_kwargs=kwargs, config=TrainConfig(epochs=1),
                progress=False)
    config = TrainConfig(epochs=1, lr=1e-9, weight_decay=0.0, seed=7)  # a step too small to move the weights
    for name, init in (("tuned", tmp_path / "clean" / "model.json"), ("fresh", None)):
        train_model(phantoms, "unet", tmp_path / name, model_kwargs=kwargs, config=config, init=init, progress=False)
    clean, tuned, fresh = (_weights(tmp_path / n) for n in ("clean", "tuned", "fresh"))
    assert all(torch.allclose(tuned[k], clean[k], atol=1e-6) for k in clean)  # started from the checkpoint
    assert not all(torch.allclose(fresh[k], clean[k], atol=1e-6) for k in clean)  # seed 7 alone starts elsewhere
    steps = {float(s["step"]) for s in load_state(tmp_path / "tuned" / "last")["optimizer"]["state"].values()}
    assert steps == {2.0}  # 4 cases, batch 2, one epoch: only this run's steps
    meta = json.loads((tmp_path / "tuned" / "model.json").read_text(encoding="utf-8"))
    assert meta["extra"]["init"] == str(tmp_path / "clean" / "model.json")


@pytest.mark.parametrize("model, kwargs, expect", [
    ("segresnet", {"init_filters": 4, "blocks_down": [1, 1], "blocks_up": [1], "norm": ["group", {"num_groups": 2}]},
     "--init: .*checkpoint architecture is 'unet', this run trains 'segresnet'"),
    ("unet", {"channels": [4, 16], "strides": [2], "num_res_units": 0}, "--init: .*weights do not fit"),
])
def test_init_from_another_architecture_is_refused_before_training(phantoms: Path, tmp_path: Path, model: str,
                                                                   kwargs: dict, expect: str) -> None:
    from medrobust.models import build_model, save_checkpoint

    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, **json.loads(TINY_UNET))
    save_checkpoint(tmp_path / "other", net, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=expect):
        train_model(phantoms, model, tmp_path / "run", model_kwargs=kwargs, init=tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="--init: .*not found"):
        train_model(phantoms, "unet", tmp_path / "run", init=tmp_path / "none", progress=False)
    assert not (tmp_path / "run").exists()
