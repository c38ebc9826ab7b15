"""nnU-Net v2 raw datasets: channels, labels and splits through open_split, and errors naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medrobust.data.io import DataError, write_nifti
from medrobust.data.nnunet_raw import load_datalist
from medrobust.data.sources import open_split

CASES = ["prostate_00", "prostate_01", "prostate_02", "prostate_04"]


def _volume(seed: int, label: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if label:
        return rng.integers(0, 3, size=(8, 8, 6)).astype(np.uint8)
    return rng.normal(size=(8, 8, 6)).astype(np.float32)


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    """Dataset042_Prostate: 2 channels (T2, ADC), 3 labels, 4 training cases, 1 test case, 2 folds."""
    root = tmp_path / "Dataset042_Prostate"
    affine = np.diag([0.6, 0.6, 3.0, 1.0])
    for i, case in enumerate(CASES):
        for k in range(2):
            write_nifti(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", _volume(10 * i + k) + 100 * k, affine)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", _volume(i, label=True), affine, dtype=np.uint8)
    for k in range(2):
        write_nifti(root / "imagesTs" / f"prostate_09_{k:04d}.nii.gz", _volume(99 + k), affine)
    doc = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
           "numTraining": 4, "file_ending": ".nii.gz", "name": "Prostate"}
    (root / "dataset.json").write_text(json.dumps(doc))
    folds = [{"train": CASES[:3], "val": CASES[3:]}, {"train": CASES[1:], "val": CASES[:1]}]
    (root / "splits_final.json").write_text(json.dumps(folds))
    return root


def test_opens_with_channels_labels_and_fold_splits(raw: Path) -> None:
    train = open_split(raw / "dataset.json", "train")
    assert train.classes == ["background", "PZ", "TZ"] and train.task == "segmentation"
    assert train.in_channels == 2 and train.spatial_dims == 3 and train.normalization == "zscore"
    assert [train.dataset[i]["id"] for i in range(len(train.dataset))] == CASES[:3]
    case = train.dataset[0]
    assert case["image"].shape == (2, 8, 8, 6) and case["label"].shape == (1, 8, 8, 6)
    assert case["meta"]["source"].endswith("imagesTr/prostate_00_0000.nii.gz")
    np.testing.assert_array_equal(case["label"][0].numpy(), _volume(0, label=True))
    assert [it["id"] for it in open_split(raw / "dataset.json", "val").dataset.items] == ["prostate_04"]
    assert [it["id"] for it in open_split(raw / "dataset.json", "val:1").dataset.items] == ["prostate_00"]
    assert [it["id"] for it in open_split(raw / "dataset.json", "training:1").dataset.items] == CASES[1:]
    test = open_split(raw / "dataset.json", "test")
    assert test.dataset.items == [{"image": [str((raw / "imagesTs" / f"prostate_09_{k:04d}.nii.gz").resolve())
                                             for k in range(2)], "label": None, "id": "prostate_09"}]
    assert "label" not in test.dataset[0]


def test_without_splits_final_train_is_every_case_and_val_says_where_the_file_comes_from(raw: Path) -> None:
    (raw / "splits_final.json").unlink()
    assert [it["id"] for it in load_datalist(raw / "dataset.json", "train")] == CASES
    with pytest.raises(DataError, match=r"split 'val' needs .*splits_final\.json \(nnU-Net writes it to "
                                        r"nnUNet_preprocessed"):
        open_split(raw / "dataset.json", "val")


def test_explicit_dataset_entries_are_read(raw: Path) -> None:
    doc = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    doc["dataset"] = {"p0": {"images": [f"imagesTr/prostate_00_{k:04d}.nii.gz" for k in range(2)],
                             "label": "labelsTr/prostate_00.nii.gz"}}
    doc["numTraining"] = 1
    (raw / "dataset.json").write_text(json.dumps(doc))
    (raw / "splits_final.json").unlink()
    items = load_datalist(raw / "dataset.json", "train")
    assert [it["id"] for it in items] == ["p0"] and items[0]["label"].endswith("labelsTr/prostate_00.nii.gz")


@pytest.mark.parametrize("change, split, expect", [
    (lambda r: (r / "imagesTr" / "prostate_01_0001.nii.gz").unlink(), "train",
     r"prostate_01_0001\.nii\.gz: missing: .*declares 2 channel"),
    (lambda r: (r / "labelsTr" / "prostate_02.nii.gz").unlink(), "train", r"labelsTr/prostate_02\.nii\.gz: not found"),
    (lambda r: _edit(r, numTraining=7), "train", "numTraining is 7 but 4 training case"),
    (lambda r: _edit(r, labels={"background": 0, "whole": [1, 2]}), "train", "region-based nnU-Net labels"),
    (lambda r: _edit(r, labels={"background": 0, "PZ": 1, "ignore": 2}), "train", "ignore label"),
    (lambda r: (r / "splits_final.json").write_text(json.dumps([{"train": ["nobody"], "val": []}])), "train",
     r"fold 0 'train' names case\(s\) not in the dataset: \['nobody'\]"),
    (lambda r: None, "val:5", "no fold 5"),
    (lambda r: None, "holdout", "unknown split 'holdout' for nnU-Net dataset"),
    (lambda r: None, "test:1", "unknown split 'test:1'"),
])
def test_bad_datasets_raise_data_error_naming_the_problem(raw: Path, change, split: str, expect: str) -> None:
    change(raw)
    with pytest.raises(DataError, match=expect):
        open_split(raw / "dataset.json", split)


def _edit(root: Path, **fields: object) -> None:
    doc = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    (root / "dataset.json").write_text(json.dumps({**doc, **fields}))
