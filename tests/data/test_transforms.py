"""make_dataset: normalisation recorded as an invertible IntensityMap, geometry, checks, collate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data.io import DataError, write_nifti, write_png
from medrobust.data.transforms import Normalization, collate, make_dataset
from medrobust.units import IntensityMap

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
AFF[:3, 3] = [-10.0, 5.0, 3.0]


def _case(tmp_path: Path, name: str = "c", shape=(12, 10, 8), affine=AFF, label_affine=None, label_shape=None,
          num_classes: int = 3, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = np.zeros(shape, np.float32)
    raw[2:-2, 2:-2, 2:-2] = rng.normal(400.0, 50.0, size=[s - 4 for s in shape])
    label = rng.integers(0, num_classes, size=label_shape or shape).astype(np.uint8)
    img = write_nifti(tmp_path / f"{name}_img.nii.gz", raw, affine)
    lab = write_nifti(tmp_path / f"{name}_lab.nii.gz", label, affine if label_affine is None else label_affine, dtype=np.uint8)
    return {"image": str(img), "label": str(lab), "id": name}, raw


def test_normalization_parse():
    assert Normalization.parse("ct:-175,250") == Normalization("ct", -175.0, 250.0)
    assert Normalization.parse("minmax:0,255").high == 255.0
    assert Normalization.parse("ZScore").kind == "zscore"
    for bad in ("ct", "ct:5,1", "minmax:1", "whiten"):
        with pytest.raises(ValueError, match="normalization"):
            Normalization.parse(bad)


def test_zscore_recorded_and_invertible(tmp_path):
    item, raw = _case(tmp_path)
    ds = make_dataset([item], num_classes=3)
    case = ds[0]
    imap = IntensityMap.from_dict(case["meta"]["intensity"])
    nonzero = raw[raw != 0]
    assert imap.offset == pytest.approx(nonzero.mean(), rel=1e-5)
    assert imap.scale == pytest.approx(nonzero.std(), rel=1e-4)
    raw_t = torch.from_numpy(raw)[None]
    torch.testing.assert_close(imap.raw_to_model(raw_t), case["image"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(imap.model_to_raw(case["image"]), raw_t, atol=1e-3, rtol=1e-5)
    assert case["image"].dtype == torch.float32 and case["image"].shape == (1, 12, 10, 8)
    assert case["label"].dtype == torch.int64 and case["label"].shape == (1, 12, 10, 8)
    torch.testing.assert_close(case["meta"]["affine"], torch.as_tensor(AFF))
    torch.testing.assert_close(case["meta"]["spacing"], torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))
    assert case["meta"]["source"] == item["image"] and case["id"] == "c"


def test_ct_window_and_minmax(tmp_path):
    item, raw = _case(tmp_path)
    case = make_dataset([item], normalization="ct:-175,250")[0]
    assert case["meta"]["intensity"] == IntensityMap.ct_window(-175, 250).to_dict()
    expected = np.clip((raw + 175) / 425, 0, 1)
    np.testing.assert_allclose(case["image"][0].numpy(), expected, atol=1e-6)
    mm = make_dataset([item], normalization="minmax")[0]
    assert float(mm["image"].min()) == 0.0 and float(mm["image"].max()) == pytest.approx(1.0)
    assert mm["meta"]["intensity"]["offset"] == pytest.approx(float(raw.min()))


def test_pad_crop_and_spacing(tmp_path):
    item, raw = _case(tmp_path)
    case = make_dataset([item], spatial_size=(16, 8, 8))[0]
    assert case["image"].shape == (1, 16, 8, 8) and case["label"].shape == (1, 16, 8, 8)
    imap = IntensityMap.from_dict(case["meta"]["intensity"])
    pad_value = float(imap.raw_to_model(torch.tensor(float(raw.min()))))
    assert float(case["image"][0, 0].max()) == pytest.approx(pad_value)  # padded rows hold the raw minimum
    assert int(case["label"][0, 0].max()) == 0
    torch.testing.assert_close(case["meta"]["affine"], torch.as_tensor(AFF))  # source affine kept
    assert not torch.allclose(case["meta"]["grid_affine"], case["meta"]["affine"])
    resampled = make_dataset([item], spacing=(4.0, 4.0, 4.0))[0]
    assert all(abs(n - s / 2) <= 1 for n, s in zip(resampled["image"].shape[1:], (12, 10, 8)))
    torch.testing.assert_close(resampled["meta"]["spacing"], torch.tensor([4.0, 4.0, 4.0], dtype=torch.float64))
    assert set(resampled["label"].unique().tolist()) <= {0, 1, 2}


def test_affine_within_tolerance_is_accepted(tmp_path):
    item, _ = _case(tmp_path, label_affine=AFF + 5e-4)
    assert make_dataset([item], num_classes=3)[0]["label"].shape == (1, 12, 10, 8)


@pytest.mark.parametrize("problem,kwargs,pattern", [
    ("shape", {"label_shape": (12, 10, 7)}, r"c_lab\.nii\.gz: shape \(12, 10, 7\) differs from image"),
    ("affine", {"label_affine": AFF + np.diag([0.01, 0, 0, 0])}, r"c_lab\.nii\.gz: affine differs from image"),
    ("range", {"num_classes": 5}, r"c_lab\.nii\.gz: label values \[3, 4\] outside the declared classes 0\.\.2"),
])
def test_bad_cases_name_the_file(tmp_path, problem, kwargs, pattern):
    item, _ = _case(tmp_path, **kwargs)
    with pytest.raises(DataError, match=pattern):
        make_dataset([item], num_classes=3)


def test_nan_image_and_fractional_label_and_missing_file(tmp_path):
    item, raw = _case(tmp_path)
    raw[0, 0, 0] = np.nan
    write_nifti(item["image"], raw, AFF)
    with pytest.raises(DataError, match=r"c_img\.nii\.gz: .*NaN"):
        make_dataset([item])
    item, _ = _case(tmp_path, name="f")
    write_nifti(item["label"], np.full((12, 10, 8), 0.5, np.float32), AFF)
    with pytest.raises(DataError, match=r"f_lab\.nii\.gz: label values must be integer"):
        make_dataset([item])
    with pytest.raises(DataError, match=r"absent\.nii\.gz: file not found"):
        make_dataset([{"image": str(tmp_path / "absent.nii.gz"), "label": None}])


def test_cache_false_reads_on_access(tmp_path):
    ds = make_dataset([{"image": str(tmp_path / "later.nii.gz"), "label": None, "id": "later"}], cache=False)
    assert len(ds) == 1
    with pytest.raises(DataError, match="later"):
        ds[0]


def test_multichannel_and_unlabelled(tmp_path):
    a, _ = _case(tmp_path, name="a")
    b, _ = _case(tmp_path, name="b", seed=1)
    case = make_dataset([{"image": [a["image"], b["image"]], "label": None, "id": "ab"}])[0]
    assert case["image"].shape == (2, 12, 10, 8) and "label" not in case
    batch = collate([case, case])
    assert batch["image"].shape == (2, 2, 12, 10, 8) and "label" not in batch and batch["id"] == ["ab", "ab"]


def test_augment_is_seeded_and_keeps_labels(tmp_path):
    item, _ = _case(tmp_path)
    plain = make_dataset([item], normalization="ct:-175,250")[0]
    ds = make_dataset([item], normalization="ct:-175,250", num_classes=3, augment=True)
    torch.manual_seed(1)
    first = [ds[0] for _ in range(4)]
    torch.manual_seed(1)
    again = [ds[0] for _ in range(4)]
    for x, y in zip(first, again):
        torch.testing.assert_close(x["image"], y["image"])
    assert any(not torch.allclose(x["image"], plain["image"]) for x in first)
    for x in first:
        assert x["image"].shape == plain["image"].shape and x["label"].dtype == torch.int64
        assert set(x["label"].unique().tolist()) <= {0, 1, 2}
        assert 0.0 <= float(x["image"].min()) and float(x["image"].max()) <= 1.0  # CT window range kept


def _png_folder(tmp_path: Path) -> list[dict]:
    items = []
    for k, level in enumerate((60, 180)):
        for i in range(2):
            path = write_png(tmp_path / f"cls{k}" / f"{i}.png", np.full((20, 24), level + i))
            items.append({"image": str(path), "label": k, "id": f"{k}/{i}"})
    return items


def test_classification_png_resize_and_collate(tmp_path):
    items = _png_folder(tmp_path)
    ds = make_dataset(items, task="classification", normalization="minmax:0,255", spatial_size=(16, 16), num_classes=2)
    case = ds[3]
    assert case["image"].shape == (1, 16, 16) and case["label"].shape == () and int(case["label"]) == 1
    assert float(case["image"].mean()) == pytest.approx(181 / 255, abs=1e-4)
    batch = collate([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 1, 16, 16) and batch["label"].tolist() == [0, 0, 1, 1]
    assert len(batch["meta"]) == 4 and batch["meta"][0]["intensity"]["scale"] == 255.0
    with pytest.raises(DataError, match=r"cls1/0\.png: class label 1 outside 0\.\.0"):
        make_dataset(items, task="classification", num_classes=1)


def test_bad_arguments(tmp_path):
    item, _ = _case(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        make_dataset([item], task="detection")
    with pytest.raises(ValueError, match="spatial_size"):
        make_dataset([item], spatial_size=(8, 8))
