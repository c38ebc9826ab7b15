"""``medrobust certify`` on a tiny phantom set: results, NIfTI maps in the case geometry, and bad input
that exits 2 naming the argument without writing anything."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medrobust.cli import main
from medrobust.data.io import read_nifti, write_png
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("certify_cli")
    data = build_phantom_segmentation(root / "data", shape=(12, 12, 12), n_train=1, n_val=1, n_test=2) / "dataset.json"
    model = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2],
                        num_res_units=0)
    checkpoint = save_checkpoint(root / "run", model, classes=["background", "a", "b"],
                                 extra={"normalization": "zscore"})
    return data, checkpoint


def _args(setup: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    data, checkpoint = setup
    return ["certify", "--checkpoint", str(checkpoint), "--data", str(data), "--sigma", "0.25", "--n", "20",
            "--n0", "5", "--out", str(out), *extra]


def test_writes_results_and_maps_in_the_case_geometry(setup: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_args(setup, out, "--tau", "0.6", "--radii", "0,0.1")) == 0
    report = json.loads((out / "certify.json").read_text(encoding="utf-8"))
    assert report["abstain_label"] == -1 and report["n"] == 20 and len(report["cases"]) == 2
    case = report["cases"][0]
    labels, meta = read_nifti(out / case["certified"])
    radius, _ = read_nifti(out / case["radius_map"])
    _, source = read_nifti(Path(setup[0]).parent / "imagesTs" / f"{case['id']}.nii.gz")
    np.testing.assert_allclose(meta["affine"], source["affine"])
    assert labels.shape == radius.shape == (12, 12, 12)
    assert ((labels == -1) == (radius == 0)).all()
    assert case["abstain_rate"] == pytest.approx(float((labels == -1).mean()))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {"certified_dice_a", "certified_dice_b", "abstain_rate"} <= set(rows[0])


@pytest.mark.parametrize("flag, value, expect", [
    ("--sigma", "0", "--sigma: sigma must be a finite number > 0"),
    ("--sigma", "nan", "--sigma: sigma must be a finite number > 0"),
    ("--n", "0", "--n: n must be an integer >= 1"),
    ("--n0", "0", "--n0: n0 must be an integer >= 1"),
    ("--alpha", "1.5", "--alpha: alpha must be in (0, 1)"),
    ("--alpha", "0", "--alpha: alpha must be in (0, 1)"),
    ("--tau", "0.5", "--tau: tau must be in (0.5, 1]"),
    ("--correction", "sidak", "--correction: correction must be one of holm, bonferroni"),
    ("--unit", "HU", "--unit: unit 'HU' cannot be converted"),
    ("--unit", "mm", "--unit: unit 'mm' is unknown"),
    ("--radii", "1,-2", "--radii: radii must be numbers >= 0"),
])
def test_bad_input_exits_2_naming_the_argument(setup: tuple[Path, Path], tmp_path: Path, flag: str, value: str,
                                               expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_args(setup, out, flag, value)) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_a_classifier_gets_a_certified_class_or_abstains_per_case(tmp_path: Path) -> None:
    rows = ["image,label,split"]
    for i in range(4):
        image = np.tile((np.arange(24) % 4 < 2) * 255.0, (24, 1))
        write_png(tmp_path / f"c{i}.png", image if i % 2 else image.T)
        rows.append(f"c{i}.png,{'ab'[i % 2]},test")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    model = build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.125)
    checkpoint = save_checkpoint(tmp_path / "run", model, classes=["a", "b"],
                                 extra={"normalization": "minmax:0,255", "image_size": [24, 24]})
    out = tmp_path / "out"
    argv = ["certify", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data.csv"), "--sigma", "8",
            "--unit", "1/255", "--n", "30", "--n0", "5", "--out", str(out)]
    assert main([*argv, "--tau", "0.8"]) == 2 and not out.exists()  # tau is for segmenters
    assert main(argv) == 0
    cases = json.loads((out / "certify.json").read_text(encoding="utf-8"))["cases"]
    assert len(cases) == 4 and {c["unit"] for c in cases} == {"1/255"}
    for case in cases:
        assert case["true_class"] in ("a", "b") and case["label"] in (-1, 0, 1)  # label: the certified index
        assert (case["radius"] > 0) == (case["certified_class"] is not None)
        assert case["sigma_model"] == pytest.approx(8 / 255)
