"""NIfTI / PNG round trips, atomic writes, and DataError on bad files."""
from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.data.io import (
    DataError,
    atomic_path,
    read_image_2d,
    read_json_or_none,
    read_nifti,
    write_json_atomic,
    write_nifti,
    write_png,
)


def _affine() -> np.ndarray:
    theta = 0.3
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]) @ np.diag([1.5, 2.0, 3.0])
    aff[:3, 3] = [-90.0, 12.5, 40.0]
    return aff


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_keeps_data_affine_spacing(tmp_path, suffix):
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_nifti(tmp_path / f"x{suffix}", data, _affine())
    array, meta = read_nifti(path)
    assert array.dtype == np.float32 and array.shape == (5, 6, 7)
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(meta["affine"], _affine(), atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], (1.5, 2.0, 3.0), rtol=1e-6)
    assert meta["source"] == str(path)
    assert nib.load(str(path)).get_data_dtype() == np.float32


def test_nifti_channels_round_trip_and_header_copied(tmp_path):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    src = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4))
    src.header["descrip"] = b"scanner-x"
    path = write_nifti(tmp_path / "c.nii.gz", torch.from_numpy(data), torch.eye(4), header=src.header)
    assert nib.load(str(path)).shape == (3, 4, 5, 2)  # channels last on disk
    array, meta = read_nifti(path)
    np.testing.assert_array_equal(array, data)
    assert meta["header"]["descrip"].tobytes().startswith(b"scanner-x")


def test_write_nifti_label_dtype(tmp_path):
    path = write_nifti(tmp_path / "l.nii.gz", np.array([[[0, 1], [2, 3]]]), np.eye(4), dtype=np.uint8)
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_nifti(path)[0], [[[0, 1], [2, 3]]])


def test_atomic_path_removes_temp_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz")
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_nifti_failure_leaves_no_file(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="bad.nii.gz"):
        write_nifti(tmp_path / "bad.nii.gz", np.zeros((2, 2, 2, 2, 2)), np.eye(4))

    def half_written(img, filename):  # the disk fills up in the middle of the write
        open(filename, "wb").write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib, "save", half_written)
    with pytest.raises(OSError, match="No space"):
        write_nifti(tmp_path / "full.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_handles_numpy_and_reads_back(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"x": np.float32(1.5), "v": np.arange(3), "t": torch.tensor([1.0])})
    assert read_json_or_none(path) == {"x": 1.5, "v": [0, 1, 2], "t": [1.0]}
    assert read_json_or_none(tmp_path / "missing.json") is None


def test_missing_nifti_names_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.nii\.gz.*not found"):
        read_nifti(tmp_path / "nope.nii.gz")


def test_truncated_gzip_nifti_names_file(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)), np.eye(4))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"t\.nii\.gz.*corrupt"):
        read_nifti(path)


def test_garbage_nifti_names_file(tmp_path):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 3))
    with pytest.raises(DataError, match=r"g\.nii\.gz"):
        read_nifti(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_intensities_name_file(tmp_path, bad):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    path = write_nifti(tmp_path / "nf.nii.gz", data, np.eye(4))
    with pytest.raises(DataError, match=r"nf\.nii\.gz.*(NaN|Inf)"):
        read_nifti(path)


def test_png_grey_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, size=(9, 11)).astype(np.float32)
    arr = read_image_2d(write_png(tmp_path / "a.png", img[None]))
    assert arr.shape == (1, 9, 11) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], img)


def test_colour_and_alpha_images_give_three_channels(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "c.jpg", quality=95)
    for name in ("c.png", "c.jpg"):
        arr = read_image_2d(tmp_path / name)
        assert arr.shape == (3, 5, 6)
        assert abs(arr[0].mean() - 200) < 3 and arr[1].max() < 10


def test_truncated_png_names_file(tmp_path):
    path = write_png(tmp_path / "cut.png", np.random.default_rng(0).integers(0, 256, size=(64, 64)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*corrupt"):
        read_image_2d(path)
    with pytest.raises(DataError, match=r"gone\.png.*not found"):
        read_image_2d(tmp_path / "gone.png")
