"""Decathlon JSON, class folders and CSV datalists: resolution and errors naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medrobust.data.datalists import (
    load_class_folders,
    load_classification_csv,
    load_decathlon,
    load_decathlon_labels,
    save_decathlon,
)
from medrobust.data.io import DataError, write_nifti, write_png


def _touch_nifti(path: Path) -> None:
    write_nifti(path, np.zeros((4, 4, 4), np.float32), np.eye(4))


@pytest.fixture()
def decathlon(tmp_path: Path) -> Path:
    root = tmp_path / "Task01"
    for name in ("a", "b", "c"):
        _touch_nifti(root / "imagesTr" / f"{name}.nii.gz")
        _touch_nifti(root / "labelsTr" / f"{name}.nii.gz")
    _touch_nifti(root / "imagesTs" / "t.nii.gz")
    doc = {"labels": {"0": "background", "2": "tumour", "1": "liver"},
           "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
                        {"image": "imagesTr/b.nii.gz", "label": "labelsTr/b.nii.gz"}],
           "validation": [{"image": str((root / "imagesTr" / "c.nii.gz").resolve()), "label": "./labelsTr/c.nii.gz"}],
           "test": ["./imagesTs/t.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json"


def test_decathlon_paths_resolved_against_json_folder(decathlon, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    items = load_decathlon(decathlon, "training")
    assert [it["id"] for it in items] == ["a", "b"]
    for it in items:
        assert Path(it["image"]).is_absolute() and Path(it["image"]).exists()
        assert Path(it["label"]).parent.name == "labelsTr"
    assert load_decathlon(decathlon, "val")[0]["image"].endswith("imagesTr/c.nii.gz")


def test_msd_test_list_of_strings_has_no_label(decathlon):
    (item,) = load_decathlon(decathlon, "test")
    assert item["label"] is None and item["id"] == "t" and Path(item["image"]).is_file()


def test_decathlon_labels_sorted_by_index(decathlon):
    assert load_decathlon_labels(decathlon) == ["background", "liver", "tumour"]


@pytest.mark.parametrize("split,content", [("validation", []), ("validation", None), ("test", [])])
def test_empty_or_missing_split_names_json_and_split(decathlon, split, content):
    doc = json.loads(decathlon.read_text(encoding="utf-8"))
    if content is None:
        del doc[split]
    else:
        doc[split] = content
    decathlon.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"dataset\.json.*'{split}'"):
        load_decathlon(decathlon, split)


def test_decathlon_bad_inputs(decathlon, tmp_path):
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_decathlon(decathlon, "holdout")
    with pytest.raises(DataError, match=r"missing\.json.*not found"):
        load_decathlon(tmp_path / "missing.json", "training")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json.*not valid JSON"):
        load_decathlon(broken, "training")
    doc = json.loads(decathlon.read_text(encoding="utf-8"))
    doc["training"][1]["label"] = "./labelsTr/zz.nii.gz"
    decathlon.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"training\[1\]\.label .*zz\.nii\.gz not found"):
        load_decathlon(decathlon, "training")


def _class_folders(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_png(root / name / f"img{i}.png", np.full((8, 8), 10 * i))
    return root


def test_class_folders_sorted_classes_and_labels(tmp_path):
    root = _class_folders(tmp_path / "set", {"tumor": 2, "no_tumor": 3})
    (root / "tumor" / "notes.txt").write_text("ignored")
    items, classes = load_class_folders(root)
    assert classes == ["no_tumor", "tumor"]
    assert sorted(it["label"] for it in items) == [0, 0, 0, 1, 1]
    assert {it["id"] for it in items if it["label"] == 1} == {"tumor/img0", "tumor/img1"}


def test_empty_class_folder_is_named(tmp_path):
    root = _class_folders(tmp_path / "set", {"a": 2, "b": 0})
    with pytest.raises(DataError, match=r"set/b: class folder has no images"):
        load_class_folders(root)
    with pytest.raises(DataError, match="needs >= 2"):
        load_class_folders(_class_folders(tmp_path / "one", {"a": 1}))
    with pytest.raises(DataError, match="not found"):
        load_class_folders(tmp_path / "absent")


def test_csv_with_names_ints_and_split(tmp_path):
    for n in ("x", "y", "z"):
        _touch_nifti(tmp_path / "img" / f"{n}.nii.gz")
    (tmp_path / "names.csv").write_text("image,label,split\nimg/x.nii.gz,benign,train\nimg/y.nii.gz,malignant,val\n"
                                        "img/z.nii.gz,benign,train\n")
    items, classes = load_classification_csv(tmp_path / "names.csv", split="train")
    assert classes == ["benign", "malignant"]
    assert [(Path(it["image"]).name, it["label"], it["id"]) for it in items] == [("x.nii.gz", 0, "x"), ("z.nii.gz", 0, "z")]
    (tmp_path / "ints.csv").write_text("image,label\nimg/x.nii.gz,2\nimg/y.nii.gz,0\n")
    items, classes = load_classification_csv(tmp_path / "ints.csv")
    assert classes == ["0", "1", "2"] and [it["label"] for it in items] == [2, 0]


def test_csv_errors(tmp_path):
    (tmp_path / "cols.csv").write_text("path,class\na.nii.gz,1\n")
    with pytest.raises(DataError, match=r"cols\.csv: missing column"):
        load_classification_csv(tmp_path / "cols.csv")
    (tmp_path / "gone.csv").write_text("image,label\nnothere.nii.gz,1\n")
    with pytest.raises(DataError, match=r"gone\.csv: row 2 image .*nothere\.nii\.gz not found"):
        load_classification_csv(tmp_path / "gone.csv")


def test_save_decathlon_round_trip(tmp_path):
    img = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    lab = (img > 0).astype(np.uint8)
    case = {"id": "c0", "image": img, "label": lab}
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    path = save_decathlon(tmp_path / "ds", {"training": [case], "validation": [case], "test": [{**case, "label": None}]},
                          ["bg", "fg"], aff, name="t", description="d")
    assert load_decathlon_labels(path) == ["bg", "fg"]
    (train,) = load_decathlon(path, "training")
    (test,) = load_decathlon(path, "test")
    assert train["id"] == "c0" and test["label"] is None and "imagesTs" in test["image"]
    assert json.loads(path.read_text(encoding="utf-8"))["numTraining"] == 2
