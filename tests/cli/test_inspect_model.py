"""``medrobust inspect-model``: what a source holds, and one line + exit 2 for a bad one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.cli import main
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model
from medrobust.units import IntensityMap
from tests.models.test_sources import write_bundle


def test_inspect_bundle_prints_classes_window_and_roi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_bundle(tmp_path / "bundle")
    assert main(["inspect-model", str(folder)]) == 0
    out = capsys.readouterr().out
    for expect in ("bundle:UNet", "background, spleen", "x_model = (x_HU - -175) / 425, clipped to [0, 1]",
                   "linear-hu:-175.0,425.0,0.0,1.0", "16 x 16 x 16", "segmentation"):
        assert expect in out


def test_inspect_checkpoint_reads_model_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    path = save_checkpoint(tmp_path, net, classes=["bg", "lesion"], intensity=IntensityMap.ct_window(-100, 300),
                           roi_size=(32, 32))
    assert main(["inspect-model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint" in out and "bg, lesion" in out and "32 x 32" in out and "x_HU - -100) / 400" in out


def test_inspect_python_factory_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inspect-model", "torch.nn:Conv3d", "--classes", "bg,fg", "--normalization", "zscore",
                 "--kwargs", json.dumps({"in_channels": 1, "out_channels": 2, "kernel_size": 1})])
    out = capsys.readouterr().out
    assert code == 0 and "python:Conv3d (4 parameters)" in out and "per case" in out


def test_torchscript_needs_trust_code_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 2, 1)), tmp_path / "m.pt")
    assert main(["inspect-model", str(tmp_path / "m.pt"), "--classes", "bg,fg"]) == 2
    assert "runs the code stored in the file" in capsys.readouterr().err
    assert main(["inspect-model", str(tmp_path / "m.pt"), "--classes", "bg,fg", "--trust-code"]) == 0
    assert "torchscript:RecursiveScriptModule" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "expect"), [
    (["nowhere/at/all"], "no such file or folder"),
    (["torch.nn:Conv2d"], "missing option(s) classes"),
    (["torch.nn:Conv2d", "--classes", "a,b", "--fold", "0"], "unknown option(s) fold"),
])
def test_bad_source_exits_2_with_one_line(args: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect-model", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1


def test_bundle_without_network_def_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_bundle(tmp_path / "bundle", network_def=False)
    assert main(["inspect-model", str(folder)]) == 2
    assert f"bundle {folder}: inference.json has no 'network_def'" in capsys.readouterr().err
