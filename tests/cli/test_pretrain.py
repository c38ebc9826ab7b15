"""``medrobust pretrain-natural``: offline photographs, a registry checkpoint, the cache, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.cli import main
from medrobust.models import build_model, load_checkpoint
from medrobust.training.pretrain import PHOTOS, class_names

BASE = ["--steps", "2", "--batch-size", "4", "--patch-size", "16"]
TINY = [*BASE, "--backbone-kwargs", '{"widen_factor": 0.25}']


def test_pretrains_caches_and_feeds_the_assimilation_backbone(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "natural"
    assert main(["pretrain-natural", "--out", str(out), *TINY]) == 0
    model, info = load_checkpoint(out / "model.json")
    assert info.architecture == "resnet18" and info.in_channels == 3 and info.recipe == "pretrain-natural"
    assert info.classes == class_names("both") and len(info.classes) == 4 * len(PHOTOS)
    assert 0.0 <= info.extra["accuracy"] <= 1.0 and info.extra["pretrain_config"]["steps"] == 2
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["pretrain-natural", "--out", str(out), *TINY]) == 0
    assert "reusing" in capsys.readouterr().out and weights.stat().st_mtime_ns == stamp
    assert main(["pretrain-natural", "--out", str(out), *TINY, "--seed", "1"]) == 0  # new config: trained again
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["extra"]["pretrain_config"]["seed"] == 1
    model, _ = load_checkpoint(out / "model.json")
    # backbone and its kwargs come from the checkpoint
    composite = build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2,
                            backbone_weights=str(out / "model.json"))
    assert composite.built_backbone == ("resnet18", {"widen_factor": 0.25})
    torch.testing.assert_close(composite.backbone.layer1[0].conv1.weight, model.layer1[0].conv1.weight)


@pytest.mark.parametrize("args,match", [
    (["--task", "jigsaw"], "--task"),
    (["--backbone", "unet"], "must be a classifier"),
    (["--patch-size", "4"], "--patch-size"),
    (["--backbone-kwargs", "[1]"], "--backbone-kwargs"),
    (["--backbone-kwargs", '{"wings": 2}'], "--backbone-kwargs do not fit"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], match: str) -> None:
    out = tmp_path / "natural"
    assert main(["pretrain-natural", "--out", str(out), *BASE, *args]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_a_foreign_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["pretrain-natural", "--out", str(tmp_path), *TINY]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
