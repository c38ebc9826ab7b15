"""Items 3, 10, 11 (train) and 15: a resume notices changed inputs or flags, odd volume shapes
train with no size flags, mixed channel counts and a truncated resume state are named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medrobust.cli import main
from medrobust.data.io import write_nifti
from medrobust.data.phantoms import phantom_segmentation
from medrobust.training import TrainConfig, train_model

TINY = '{"channels": [4, 8, 8], "strides": [2, 2], "num_res_units": 0}'  # total stride 4
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def _dataset(root: Path, shape: tuple[int, ...], cases: int = 2) -> Path:
    """A Decathlon folder of ``cases`` phantoms of ``shape`` (each case both train and val)."""
    image, label = phantom_segmentation(shape, seed=1, batch=cases)
    entries = []
    for i in range(cases):
        write_nifti(root / f"imagesTr/c{i}.nii.gz", (100 * image[i, 0] + 20).numpy(), AFFINE)
        write_nifti(root / f"labelsTr/c{i}.nii.gz", label[i, 0].numpy(), AFFINE, dtype=np.int16)
        entries.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    doc = {"labels": {"0": "background", "1": "a", "2": "b"}, "training": entries, "validation": entries}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json"


def _train(data: Path, out: Path, *flags: str) -> int:
    return main(["train", "--data", str(data), "--model", "unet", "--out", str(out), "--epochs", "1",
                 "--batch-size", "1", "--device", "cpu", "--model-kwargs", TINY, *flags])


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset.json, a finished one-epoch run folder trained on it)."""
    data = _dataset(tmp_path / "data", (16, 16, 12))
    assert _train(data, tmp_path / "run") == 0
    return data, tmp_path / "run"


def test_resume_with_other_flags_is_refused_naming_them(run: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, out = run
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert _train(data, out, "--seed", "7", "--lr", "0.05") == 2
    err = capsys.readouterr().err
    assert "--seed was 0, now 7" in err and "--lr was 0.001, now 0.05" in err and "--restart" in err
    assert (out / "model.safetensors").read_bytes() == weights  # nothing touched
    assert _train(data, out, "--seed", "7", "--lr", "0.05", "--resume-anyway") == 0
    assert json.loads((out / "provenance.json").read_text(encoding="utf-8"))["config"]["--seed"] == 7
    assert _train(data, out, "--seed", "3", "--restart") == 0
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["extra"]["train_config"]["seed"] == 3  # trained anew


def test_resume_after_an_input_file_changed_names_the_file(run: tuple[Path, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data, out = run
    image = data.parent / "imagesTr" / "c1.nii.gz"
    write_nifti(image, np.full((16, 16, 12), 5.0, dtype=np.float32) + np.arange(12), AFFINE)  # same path, new scan
    capsys.readouterr()
    assert _train(data, out) == 2
    err = capsys.readouterr().err
    assert f"{image.resolve()} changed content" in err and len(err.strip().splitlines()) == 1


def test_truncated_resume_state_exits_2_naming_the_file(run: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, out = run
    state = out / "last" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    capsys.readouterr()
    assert _train(data, out, "--epochs", "2", "--resume-anyway") == 2
    err = capsys.readouterr().err
    assert str(state) in err and "--restart" in err and "Traceback" not in err


@pytest.mark.parametrize("shape", [(22, 27, 22), (12, 15, 9)])
def test_odd_volume_shapes_train_with_no_size_flags(tmp_path: Path, shape: tuple[int, int, int],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data", shape)
    assert _train(data, tmp_path / "run") == 0
    spec = json.loads((tmp_path / "run" / "model.json").read_text(encoding="utf-8"))
    roi = spec["roi_size"]
    assert all(r % 4 == 0 and r <= s for r, s in zip(roi, shape)) and spec["extra"]["patch_size"] == roi
    assert f"patch and ROI {'x'.join(map(str, roi))} chosen from the data" in capsys.readouterr().out
    # the checkpoint predicts the whole odd-shaped volume (windowed, padded, cropped back)
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "model.json"), "--data", str(data),
                 "--split", "val", "--out", str(tmp_path / "pred")]) == 0


def test_a_shape_the_network_cannot_take_is_named_before_training(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data", (12, 15, 9))
    assert _train(data, tmp_path / "run", "--roi-size", "16,16,12") == 2  # whole volume, 15 and 9 not multiples of 4
    err = capsys.readouterr().err
    assert "--roi-size" in err and "c0.nii.gz" in err and "12x15x9" in err
    assert _train(data, tmp_path / "run", "--patch-size", "10,12,8") == 2
    assert "--patch-size: 10x12x8 is not divisible by the network's total stride 4x4x4" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_images_with_other_channel_counts_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data", (16, 16, 12))
    image = data.parent / "imagesTr" / "c1.nii.gz"
    write_nifti(image, np.random.default_rng(0).normal(size=(2, 16, 16, 12)).astype(np.float32), AFFINE)
    assert _train(data, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert str(image) in err and "2 channel(s)" in err and "has 1" in err
    assert not (tmp_path / "run").exists()


def test_fp16_on_the_cpu_is_refused_for_library_callers(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", (16, 16, 12))
    with pytest.raises(ValueError, match="--amp: fp16 needs a CUDA device"):
        train_model(data, "unet", tmp_path / "run", config=TrainConfig(amp="fp16", device="cpu"), progress=False)
    assert not (tmp_path / "run").exists()
