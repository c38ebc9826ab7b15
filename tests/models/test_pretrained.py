"""Pretrained weights: torchvision key names mapped onto MONAI nets, safetensors, no unpickling."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.models import CheckpointError, build_model, save_checkpoint
from medrobust.models.pretrained import load_pretrained, read_state_dict, torchvision_to_monai


def _torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    """MONAI resnet18 weights under torchvision's names (no downsample conv bias, 1000-class fc)."""
    net = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=1000)
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("downsample.0.bias")}


def _body(state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(head) and not k.endswith("downsample.0.bias")}


def test_torchvision_resnet18_state_dict(tmp_path: Path) -> None:
    source = _torchvision_resnet18_state()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)  # DDP-style nesting
    model = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=2)
    fc_before = model.fc.weight.detach().clone()
    report = load_pretrained(model, path)
    assert report.head_skipped == ["fc.weight", "fc.bias"]
    assert sorted(report.zero_filled) == [f"layer{i}.0.downsample.0.bias" for i in (2, 3, 4)]
    assert not (report.missing or report.unexpected or report.mismatched)
    state = model.state_dict()
    for key, value in _body(source, "fc.").items():
        torch.testing.assert_close(state[key], value, msg=key)
    assert state["layer2.0.downsample.0.bias"].abs().max() == 0
    torch.testing.assert_close(model.fc.weight, fc_before)  # the head keeps its initialisation


def test_rgb_stem_is_summed_onto_one_channel(tmp_path: Path) -> None:
    source = _torchvision_resnet18_state()
    torch.save(source, tmp_path / "r.pt")
    model = build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2)
    report = load_pretrained(model, tmp_path / "r.pt")
    assert report.channel_summed == ["conv1.weight"]
    torch.testing.assert_close(model.conv1.weight, source["conv1.weight"].sum(1, keepdim=True))


def test_torchvision_densenet121_names(tmp_path: Path) -> None:
    net = build_model("densenet121", spatial_dims=2, in_channels=3, out_channels=1000)
    source = {k.replace(".layers.", ".").replace("class_layers.out.", "classifier."): v.clone()
              for k, v in net.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm1.weight" in source and "classifier.weight" in source
    torch.save(source, tmp_path / "densenet121.pth")
    model = build_model("densenet121", spatial_dims=2, in_channels=3, out_channels=2)
    report = load_pretrained(model, tmp_path / "densenet121.pth")
    assert report.head_skipped == ["class_layers.out.weight", "class_layers.out.bias"]
    assert len(report.loaded) == len(source) - 2
    torch.testing.assert_close(model.state_dict()["features.denseblock4.denselayer16.layers.conv2.weight"],
                               source["features.denseblock4.denselayer16.conv2.weight"])


def test_old_torchvision_densenet_spelling_is_mapped() -> None:
    old = {"features.denseblock1.denselayer1.norm.1.weight": torch.zeros(1),
           "features.denseblock2.denselayer3.conv.2.weight": torch.zeros(1),
           "features.denseblock1.denselayer1.layers.norm1.weight": torch.zeros(1),
           "fc.weight": torch.zeros(1)}
    assert sorted(torchvision_to_monai(old)) == sorted([
        "features.denseblock1.denselayer1.layers.norm1.weight", "features.denseblock2.denselayer3.layers.conv2.weight",
        "fc.weight"])


def test_medrobust_checkpoint_and_safetensors(tmp_path: Path) -> None:
    net = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=4)
    checkpoint = save_checkpoint(tmp_path / "ck", net, classes=list("abcd"))
    for path in (checkpoint, checkpoint.parent, checkpoint.parent / "model.safetensors"):
        model = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=4)
        report = load_pretrained(model, path)
        assert not report.head_skipped and len(report.loaded) == len(net.state_dict())
        torch.testing.assert_close(model.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="evil.pth.*weights-only"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")


def test_weights_of_another_architecture_are_refused_with_keys(tmp_path: Path) -> None:
    other = build_model("resnet50", spatial_dims=2, in_channels=3, out_channels=2)
    torch.save(other.state_dict(), tmp_path / "r50.pt")
    model = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=2)
    with pytest.raises(CheckpointError, match=r"r50.pt.*do not fit.*unexpected.*layer1.0.conv3.weight"):
        load_pretrained(model, tmp_path / "r50.pt")
    report = load_pretrained(model, tmp_path / "r50.pt", strict=False)
    assert report.mismatched and report.unexpected and "conv1.weight" in report.loaded
    three_d = build_model("resnet18", spatial_dims=3, in_channels=3, out_channels=2)
    torch.save(_torchvision_resnet18_state(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match=r"conv1.weight: file \(64, 3, 7, 7\) vs model \(64, 3, 7, 7, 7\)"):
        load_pretrained(three_d, tmp_path / "r18.pt")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "unrelated.pt")
    with pytest.raises(CheckpointError, match="no tensor fits"):
        load_pretrained(model, tmp_path / "unrelated.pt")
