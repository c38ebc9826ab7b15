"""Checkpoints: round trip, header contents, mismatches named by key and shape, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import medrobust
from medrobust.models import (
    CheckpointError,
    Ensemble,
    SlidingWindow,
    build_model,
    load_checkpoint,
    load_state_into,
    save_checkpoint,
)
from medrobust.units import IntensityMap

UNET = {"channels": (4, 8), "strides": (2,), "num_res_units": 1}


def _unet(out_channels: int = 3, **kw: object) -> torch.nn.Module:
    return build_model("unet", spatial_dims=3, in_channels=1, out_channels=out_channels, **{**UNET, **kw})


def _save(tmp_path: Path, model: torch.nn.Module, classes: list[str]) -> Path:
    return save_checkpoint(tmp_path / "ckpt", model, classes=classes, intensity=IntensityMap.ct_window(-175, 250),
                           roi_size=(16, 16, 16), recipe="pgd_at", extra={"epoch": 3})


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _unet().eval()
    path = _save(tmp_path, model, ["background", "liver", "tumour"])
    assert path == tmp_path / "ckpt" / "model.json" and (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]  # no temp files
    loaded, info = load_checkpoint(path, expected_architecture="unet")
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert info.architecture == "unet" and info.classes == ["background", "liver", "tumour"]
    assert info.intensity == IntensityMap.ct_window(-175, 250)
    assert info.roi_size == (16, 16, 16) and info.recipe == "pgd_at" and info.extra == {"epoch": 3}
    assert info.spatial_dims == 3 and info.in_channels == 1 and info.medrobust_version == medrobust.__version__
    assert load_checkpoint(path.parent)[1].path == path  # the folder works too


def test_header_fields(tmp_path: Path) -> None:
    header = json.loads(_save(tmp_path, _unet(), ["a", "b", "c"]).read_text(encoding="utf-8"))
    assert header["format"] == "medrobust-checkpoint/1"
    assert header["kwargs"] == {"spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                                "channels": [4, 8], "strides": [2], "num_res_units": 1}
    assert header["intensity"] == {"offset": -175.0, "scale": 425.0, "clip": [0.0, 1.0], "raw_unit": "HU"}


def test_wrapped_and_ensemble_models_round_trip(tmp_path: Path) -> None:
    sw_path = save_checkpoint(tmp_path / "sw", SlidingWindow(_unet(), (8, 8, 8)), classes=["a", "b", "c"])
    assert load_checkpoint(sw_path)[1].architecture == "unet"

    ens = Ensemble([_unet(), _unet(num_res_units=0)], mode="mean_probs").eval()
    loaded, info = load_checkpoint(save_checkpoint(tmp_path / "ens", ens, classes=["a", "b", "c"]))
    assert isinstance(loaded, Ensemble) and loaded.mode == "mean_probs" and info.architecture == "ensemble"
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), ens(x))


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    def tied() -> torch.nn.Module:
        net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        net[1].weight = net[0].weight  # shared storage: safetensors refuses it unless cloned
        return net

    model = tied()
    path = save_checkpoint(tmp_path, model, classes=["a"], architecture="tied", kwargs={})
    fresh = load_state_into(tied(), path.with_name("model.safetensors"))
    assert torch.equal(fresh[1].weight, model[0].weight) and torch.equal(fresh[0].bias, model[0].bias)


def test_other_class_count_lists_differing_shapes(tmp_path: Path) -> None:
    path = _save(tmp_path, _unet(out_channels=3), ["a", "b", "c"])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*differing shapes \(\d+\):.*\(3, .*\) vs model \(2, "):
        load_state_into(_unet(out_channels=2), path.with_name("model.safetensors"))
    header = json.loads(path.read_text(encoding="utf-8"))
    header["kwargs"]["out_channels"] = 2
    path.write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="differing shapes"):
        load_checkpoint(path)


def test_other_architecture_lists_keys(tmp_path: Path) -> None:
    path = _save(tmp_path, _unet(), ["a", "b", "c"])
    other = build_model("segresnet", spatial_dims=3, out_channels=3, init_filters=4, norm=("group", {"num_groups": 2}))
    with pytest.raises(CheckpointError) as err:
        load_state_into(other, path.with_name("model.safetensors"))
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "model.safetensors" in msg
    assert "convInit.conv.weight" in msg and "more)" in msg  # first keys listed, the rest counted
    with pytest.raises(CheckpointError, match="architecture is 'unet', expected 'segresnet'"):
        load_checkpoint(path, expected_architecture="segresnet")


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else/9"}', "not a medrobust checkpoint"),
    ('["a list"]', "not a medrobust checkpoint"),
    ('{"format": "medrobust-checkpoint/1", "architecture": "unet", "classes": []}', "'kwargs' missing"),
    ('{"format": "medrobust-checkpoint/1", "architecture": "vnet", "kwargs": {}, "classes": []}', "cannot build 'vnet'"),
])
def test_corrupt_json_is_named(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_or_corrupt_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing" / "model.json")
    path = _save(tmp_path, _unet(), ["a", "b", "c"])
    weights = path.with_name("model.safetensors")
    weights.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_checkpoint(path)


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out_channels=3"):
        save_checkpoint(tmp_path, _unet(), classes=["a", "b"])
    with pytest.raises(ValueError, match="medrobust_spec"):
        save_checkpoint(tmp_path, torch.nn.Conv3d(1, 2, 1), classes=["a", "b"])
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path, _unet(), classes=["a", "b", "c"], extra={"fn": print})
    assert not (tmp_path / "model.json").exists()
    explicit = save_checkpoint(tmp_path, torch.nn.Conv3d(1, 2, 1), classes=["a", "b"], architecture="conv",
                               kwargs={"out_channels": 2})
    assert json.loads(explicit.read_text(encoding="utf-8"))["architecture"] == "conv"
