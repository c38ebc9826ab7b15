"""Items 5, 8, 14 and 19 (kwargs): a checkpoint is checked when it is loaded, the error names the file and field."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from medrobust.cli import main
from tests.reliability.conftest import MakeData


def _edit_header(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    def apply(checkpoint: Path) -> Path:
        header = json.loads(checkpoint.read_text(encoding="utf-8"))
        change(header)
        checkpoint.write_text(json.dumps(header))
        return checkpoint
    return apply


def _nan_weights(checkpoint: Path) -> Path:
    weights = checkpoint.with_name("model.safetensors")
    state = load_file(str(weights))
    first = sorted(k for k, t in state.items() if t.is_floating_point())[0]
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(weights))
    return weights


def _four_channels(checkpoint: Path) -> Path:
    """3 class names but a network (and weights) with 4 output channels."""
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.registry import build_model

    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=4, channels=(4, 8), strides=(2,),
                      num_res_units=0)
    save_checkpoint(checkpoint.parent, net, classes=["background", "a", "b", "c"])
    return _edit_header(lambda h: h.update(classes=["background", "a", "b"]))(checkpoint)


@pytest.mark.parametrize("breaks, expect", [
    (_four_channels, "field 'classes' names 3 classes"),
    (_nan_weights, "weights hold NaN or Inf values"),
    (_edit_header(lambda h: h.update(roi_size=64)), "field 'roi_size' must be a list of 2 or 3 positive integers"),
    (_edit_header(lambda h: h.update(extra="str")), "field 'extra' must be an object"),
    (_edit_header(lambda h: h["kwargs"].update(channels="abc")), "cannot build 'unet' from field 'kwargs'"),
], ids=["classes-vs-channels", "nan-weights", "roi_size", "extra", "kwargs-type"])
def test_bad_checkpoint_exits_2_naming_file_and_field(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                                      breaks: Callable[[Path], Path], expect: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    named = breaks(checkpoint)
    data = make_data([{"image": "imagesTs/c0.nii.gz", "label": "labelsTs/c0.nii.gz"}])
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{named}:" in err and expect in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
