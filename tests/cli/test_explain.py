"""``medrobust explain``: PNG overlays (2D), NIfTI maps with the source affine (3D), the IoU
table; a segmentation model or a bad layer exits 2 with nothing written."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.cli import main
from medrobust.data.io import write_nifti, write_png
from medrobust.models import build_model, save_checkpoint

TINY = {"widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}



def _read_iou(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_2d_overlays_and_iou_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ["healthy", "lesion"]:
        for j in range(2):
            write_png(tmp_path / "data" / "test" / cls / f"img{j}.png", rng.uniform(0, 255, (32, 32)))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ck", build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2, **TINY),
                           classes=["healthy", "lesion"], extra={"normalization": "minmax"})
    out = tmp_path / "cams"
    assert main(["explain", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--split", "test",
                 "--attack", "pgd", "--eps", "4", "--steps", "2", "--out", str(out)]) == 0
    rows = _read_iou(out / "iou.csv")
    assert [r["id"] for r in rows] == ["healthy/img0", "healthy/img1", "lesion/img0", "lesion/img1", "mean"]
    ious = [float(r["iou_top0.1"]) for r in rows[:-1]]
    assert all(0 <= v <= 1 for v in ious) and float(rows[-1]["iou_top0.1"]) == pytest.approx(np.mean(ious), abs=1e-4)
    for r in rows[:-1]:
        for key in ("clean_map", "adv_map"):
            with Image.open(out / r[key]) as im:
                assert im.mode == "RGB" and im.size == (32, 32)
        assert r["pred_clean"] in ("healthy", "lesion")


def test_3d_maps_keep_the_source_affine(tmp_path: Path) -> None:
    affine = np.diag([2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 20.0]
    rows = ["image,label,split"]
    rng = np.random.default_rng(1)
    for i in range(2):
        write_nifti(tmp_path / f"vol{i}.nii.gz", rng.normal(100, 20, (16, 16, 16)).astype(np.float32), affine)
        rows.append(f"vol{i}.nii.gz,{('healthy', 'lesion')[i]},test")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ck", build_model("resnet18", spatial_dims=3, in_channels=1, out_channels=2, **TINY),
                           classes=["healthy", "lesion"], extra={"normalization": "zscore"})
    out = tmp_path / "cams"
    assert main(["explain", "--checkpoint", str(ckpt), "--data", str(tmp_path / "cases.csv"), "--split", "test",
                 "--steps", "1", "--out", str(out)]) == 0
    table = _read_iou(out / "iou.csv")
    assert len(table) == 3
    for r in table[:-1]:
        for key in ("clean_map", "adv_map"):
            img = nib.load(str(out / r[key]))
            cam = np.asarray(img.dataobj)
            assert np.allclose(img.affine, affine) and cam.shape == (16, 16, 16) and img.get_data_dtype() == np.float32
            assert cam.min() >= 0 and cam.max() <= 1


def test_segmentation_model_or_bad_layer_exit_2_with_nothing_written(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from medrobust.data.phantoms import build_phantom_segmentation

    data = build_phantom_segmentation(tmp_path / "seg", shape=(16, 16, 16), n_train=1, n_val=1, n_test=1)
    unet = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                       num_res_units=0)
    seg = save_checkpoint(tmp_path / "seg_ck", unet, classes=["background", "a", "b"], extra={"normalization": "zscore"})
    out = tmp_path / "cams"
    assert main(["explain", "--checkpoint", str(seg), "--data", str(data / "dataset.json"), "--out", str(out)]) == 2
    assert "needs a classifier" in capsys.readouterr().err and not out.exists()

    write_png(tmp_path / "cls" / "test" / "a" / "0.png", np.full((32, 32), 50.0))
    write_png(tmp_path / "cls" / "test" / "b" / "0.png", np.full((32, 32), 150.0))
    cls = save_checkpoint(tmp_path / "cls_ck", build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2,
                                                           **TINY), classes=["a", "b"])
    assert main(["explain", "--checkpoint", str(cls), "--data", str(tmp_path / "cls"), "--target-layer", "layer9",
                 "--out", str(out)]) == 2
    assert "layer9" in capsys.readouterr().err and not out.exists()
