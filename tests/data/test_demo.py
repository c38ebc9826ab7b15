"""Demo sets (MNI152), phantoms and the batched subject synthesis."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.data.datalists import load_class_folders, load_decathlon, load_decathlon_labels
from medrobust.data.demo import (
    SEG_CLASSES,
    build_demo_classification,
    build_demo_segmentation,
    build_phantom_segmentation,
    phantom_classification,
    phantom_segmentation,
)
from medrobust.data.synth import bias_field, deform, random_grid, rician_noise
from medrobust.data.transforms import make_dataset


@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 20)])
def test_phantom_segmentation(shape):
    image, label = phantom_segmentation(shape, num_classes=3, seed=0, batch=2)
    assert image.shape == (2, 1, *shape) and image.dtype == torch.float32
    assert label.shape == (2, 1, *shape) and label.dtype == torch.int64
    for b in range(2):
        assert set(label[b].unique().tolist()) == {0, 1, 2}
        means = [float(image[b][label[b] == k].mean()) for k in range(3)]
        assert means == sorted(means)  # intensity rises with the class
    again, _ = phantom_segmentation(shape, num_classes=3, seed=0, batch=2)
    other, _ = phantom_segmentation(shape, num_classes=3, seed=1, batch=2)
    assert torch.equal(image, again) and not torch.equal(image, other)
    with pytest.raises(ValueError, match="shape"):
        phantom_segmentation((3, 3))


def test_phantom_classification():
    image, label = phantom_classification((32, 32), num_classes=2, seed=0, batch=8)
    assert image.shape == (8, 1, 32, 32) and label.dtype == torch.int64 and label.shape == (8,)
    assert sorted(label.tolist()) == [0] * 4 + [1] * 4
    peak = image.amax(dim=(1, 2, 3))
    assert peak[label == 1].min() > peak[label == 0].max()


def test_phantom_decathlon_set_loads(tmp_path):
    root = build_phantom_segmentation(tmp_path / "ph", shape=(16, 16, 16), n_train=2, n_val=1, n_test=1)
    datalist = root / "dataset.json"
    assert load_decathlon_labels(datalist) == ["background", "class1", "class2"]
    ds = make_dataset(load_decathlon(datalist, "training"), num_classes=3)
    assert len(ds) == 2 and ds[0]["image"].shape == (1, 16, 16, 16)
    torch.testing.assert_close(ds[0]["meta"]["spacing"], torch.full((3,), 2.0, dtype=torch.float64))


def test_identity_grid_reproduces_input():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, 5)
    grid = random_grid((7, 9, 5), 2, gen, rotate=0.0, scale=0.0, translate=0.0, elastic=0.0)
    torch.testing.assert_close(deform(x, grid), x, atol=1e-5, rtol=1e-5)


def test_grid_translation_is_bounded_and_whole_voxel_shifts_are_exact():
    still = {"rotate": 0.0, "scale": 0.0, "elastic": 0.0}
    ident = random_grid((10, 12), 1, torch.Generator().manual_seed(0), translate=0.0, **still)
    moved = random_grid((10, 12), 1, torch.Generator().manual_seed(0), translate=1.0, **still)
    half = torch.tensor([5.5, 4.5])  # grid coordinates are (x, y) = (axis 1, axis 0), in half-sizes (n - 1) / 2
    shift = (moved - ident) * half
    assert 0 < float(shift.abs().max()) <= 1.0 and torch.allclose(shift, shift[0, 0, 0], atol=1e-5)
    x = torch.randn(1, 1, 10, 12)
    for a, b in ((1, 0), (0, 1), (2, 3)):
        out = deform(x, ident + torch.tensor([b, a]) / half)
        torch.testing.assert_close(out[..., : 10 - a, : 12 - b], x[..., a:, b:], atol=1e-5, rtol=1e-5)


def test_bias_field_and_noise():
    gen = torch.Generator().manual_seed(0)
    field = bias_field((8, 9, 10), 3, gen, strength=0.3)
    assert field.shape == (3, 1, 8, 9, 10) and (field > 0).all() and (field.std(dim=(1, 2, 3, 4)) > 0).all()
    noisy = rician_noise(torch.zeros(4, 1, 50, 50), gen, max_std=0.1)
    assert (noisy >= 0).all() and float(noisy.mean()) > 0


@pytest.mark.slow
def test_demo_segmentation_small_is_deterministic_and_reused(tmp_path):
    kwargs = {"n_train": 2, "n_val": 1, "n_test": 1, "seed": 3, "spacing_mm": 7.0}
    datalist = build_demo_segmentation(tmp_path / "a", **kwargs)
    assert datalist.name == "dataset.json"
    doc = json.loads(datalist.read_text(encoding="utf-8"))
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [2, 1, 1]
    assert load_decathlon_labels(datalist) == SEG_CLASSES == ["background", "gm", "wm", "csf"]
    test = load_decathlon(datalist, "test")
    assert test[0]["label"] is not None and "imagesTs" in test[0]["image"]
    img = nib.load(load_decathlon(datalist, "training")[0]["image"])
    lab = nib.load(load_decathlon(datalist, "training")[0]["label"])
    assert img.get_data_dtype() == np.float32 and lab.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (7.0, 7.0, 7.0))
    assert all(s % 8 == 0 for s in img.shape) and np.allclose(img.affine, lab.affine)
    labels = np.asarray(lab.dataobj)
    fractions = [float((labels == k).mean()) for k in range(4)]
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert fractions[0] > 0.4 and fractions[1] > 0.1 and fractions[2] > 0.05  # background, GM, WM
    data = np.asarray(img.dataobj)
    assert np.isfinite(data).all() and data[labels == 2].mean() > data[labels == 1].mean() > data[labels == 0].mean()

    stamp = datalist.stat().st_mtime_ns
    assert build_demo_segmentation(tmp_path / "a", **kwargs) == datalist and datalist.stat().st_mtime_ns == stamp
    twin = build_demo_segmentation(tmp_path / "b", **kwargs)
    for a, b in zip(load_decathlon(datalist, "training"), load_decathlon(twin, "training")):
        assert np.array_equal(nib.load(a["image"]).get_fdata(), nib.load(b["image"]).get_fdata())
        assert np.array_equal(nib.load(a["label"]).get_fdata(), nib.load(b["label"]).get_fdata())
    subjects = [nib.load(it["image"]).get_fdata() for it in load_decathlon(datalist, "training")]
    assert not np.allclose(subjects[0], subjects[1])  # subjects differ

    rebuilt = build_demo_segmentation(tmp_path / "a", **{**kwargs, "n_train": 3})
    assert len(load_decathlon(rebuilt, "training")) == 3


def test_demo_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        build_demo_segmentation(tmp_path, n_train=1, n_val=1, n_test=1)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.slow
def test_demo_classification_small(tmp_path):
    root = build_demo_classification(tmp_path / "cls", n_train=8, n_val=4, n_test=4, seed=1, size=32)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        items, classes = load_class_folders(root / split)
        assert classes == ["healthy", "lesion"] and len(items) == n
        assert sorted(it["label"] for it in items) == [0] * (n // 2) + [1] * (n // 2)
    first = sorted((root / "train" / "lesion").glob("*.png"))[0]
    image = np.asarray(Image.open(first))
    assert image.shape == (32, 32) and image.dtype == np.uint8 and image.max() > 100 and image.min() < 20
    twin = build_demo_classification(tmp_path / "twin", n_train=8, n_val=4, n_test=4, seed=1, size=32)
    assert np.array_equal(image, np.asarray(Image.open(twin / "train" / "lesion" / first.name)))
    ds = make_dataset(load_class_folders(root / "train")[0], task="classification", normalization="minmax:0,255",
                      num_classes=2)
    assert ds[0]["image"].shape == (1, 32, 32) and float(ds[0]["image"].max()) <= 1.0
