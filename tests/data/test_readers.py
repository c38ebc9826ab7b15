"""Reading through MONAI's LoadImage (NIfTI, NRRD, MetaImage, DICOM series) and writing in the source's format."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medrobust.data.io import DataError, read_nifti, write_nifti
from medrobust.data.provenance import item_files
from medrobust.data.readers import read_image
from medrobust.data.transforms import make_dataset
from medrobust.data.writers import copy_image, copy_suffix, output_note, output_suffix, write_image
from tests.data.formats import oblique_affine, write_dicom_series, write_like


@pytest.fixture()
def scan(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """An integer-valued CT-like volume (HU) on an oblique grid, as NIfTI."""
    data = np.random.default_rng(0).integers(-1000, 1500, size=(6, 7, 5)).astype(np.float32)
    return write_nifti(tmp_path / "ct.nii.gz", data, oblique_affine()), data


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_reader_matches_nibabel(tmp_path: Path, suffix: str) -> None:
    data = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_nifti(tmp_path / f"x{suffix}", data, oblique_affine())
    array, meta = read_image(path)
    ref = nib.load(str(path))
    np.testing.assert_array_equal(array[0], ref.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(meta["affine"], ref.affine)
    old, old_meta = read_nifti(path)  # the nibabel reader the datasets used before
    np.testing.assert_array_equal(array[0], old)
    np.testing.assert_allclose(meta["spacing"], old_meta["spacing"], rtol=1e-6)
    assert meta["format"] == "nifti" and meta["header"]["dim"][0] == 3


def test_nifti_scaled_ints_and_channels_match_nibabel(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(2 * 3 * 4 * 2, dtype=np.int16).reshape(2, 3, 4, 2), oblique_affine())
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "s.nii.gz")
    array, meta = read_image(tmp_path / "s.nii.gz")
    ref = nib.load(str(tmp_path / "s.nii.gz"))
    np.testing.assert_allclose(array, np.moveaxis(ref.get_fdata(), -1, 0), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(meta["affine"], ref.affine)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_nrrd_and_metaimage_read_like_the_nifti(tmp_path: Path, scan: tuple[Path, np.ndarray], suffix: str) -> None:
    nifti, data = scan
    array, meta = read_image(write_like(nifti, tmp_path / f"ct{suffix}"))
    np.testing.assert_array_equal(array[0], data)
    np.testing.assert_allclose(meta["affine"], nib.load(str(nifti)).affine, atol=1e-5)
    np.testing.assert_allclose(meta["spacing"], (1.5, 2.0, 2.5), rtol=1e-6)


def test_dicom_series_reads_like_the_nifti(tmp_path: Path, scan: tuple[Path, np.ndarray]) -> None:
    nifti, data = scan
    array, meta = read_image(write_dicom_series(nifti, tmp_path / "series"))
    assert meta["format"] == "dicom" and array.shape == (1, 6, 7, 5)
    np.testing.assert_array_equal(array[0], data)
    np.testing.assert_allclose(meta["affine"], nib.load(str(nifti)).affine, atol=1e-5)


def test_dicom_folder_with_two_series_is_refused_naming_folder_and_uids(tmp_path: Path,
                                                                        scan: tuple[Path, np.ndarray]) -> None:
    folder = write_dicom_series(scan[0], tmp_path / "mixed", series_uid="1.2.3.100")
    write_dicom_series(scan[0], folder, series_uid="1.2.3.200", first_instance=50)
    with pytest.raises(DataError, match=r"mixed: holds 2 DICOM series \(1\.2\.3\.100, 1\.2\.3\.200\)"):
        read_image(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no DICOM series"):
        read_image(tmp_path / "empty")


@pytest.mark.parametrize("name, content, expect", [
    ("bad.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n12", "cannot read image"),
    ("bad.mha", b"not a metaimage", "cannot read image"),
    ("bad.dcm", b"\x00" * 200, "cannot read image"),
    ("notes.txt", b"", "unsupported image format"),
])
def test_bad_files_raise_data_error_naming_them(tmp_path: Path, name: str, content: bytes, expect: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}: {expect}"):
        read_image(tmp_path / name)


def test_a_4d_scalar_nrrd_is_refused_naming_it(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([3, 3, 3, 2], sitk.sitkFloat32), str(tmp_path / "four.nrrd"))
    with pytest.raises(DataError, match=r"four\.nrrd: image has 4 dimensions"):
        read_image(tmp_path / "four.nrrd")


def test_truncated_nifti_raises_data_error(tmp_path: Path, scan: tuple[Path, np.ndarray]) -> None:
    victim = tmp_path / "cut.nii.gz"
    victim.write_bytes(scan[0].read_bytes()[:-200])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read image"):
        read_image(victim)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_writer_keeps_the_source_format_and_geometry(tmp_path: Path, scan: tuple[Path, np.ndarray],
                                                     suffix: str) -> None:
    source = write_like(scan[0], tmp_path / f"src{suffix}")
    raw, meta = read_image(source)
    out = write_image(tmp_path / f"pred{output_suffix(source)}", (raw[0] > 0).astype(np.int16), meta["affine"],
                      dtype=np.int16)
    assert out.suffix == suffix
    src, written = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkInt16 and written.GetSize() == src.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), src.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(written.GetOrigin(), src.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(written.GetDirection(), src.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).T, raw[0] > 0)


def test_writer_channels_and_bad_paths(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    array, meta = read_image(write_image(tmp_path / "two.nrrd", data, oblique_affine()))
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(meta["affine"], oblique_affine(), atol=1e-9)
    with pytest.raises(DataError, match=r"x\.png: output must end in"):
        write_image(tmp_path / "x.png", data[0], np.eye(4))
    with pytest.raises(DataError, match="zero-length axis"):
        write_image(tmp_path / "z.mha", data[0], np.diag([1.0, 0.0, 1.0, 1.0]))
    assert not list(tmp_path.glob(".tmp-*"))


def test_output_formats_and_label_copies(tmp_path: Path, scan: tuple[Path, np.ndarray]) -> None:
    mhd = write_like(scan[0], tmp_path / "seg.mhd")
    series = write_dicom_series(scan[0], tmp_path / "series")
    assert [output_suffix(p) for p in (scan[0], mhd, series)] == [".nii.gz", ".mha", ".nii.gz"]
    assert "DICOM series, which is not written" in output_note(series)
    assert copy_suffix(mhd) == ".mha" and copy_suffix(scan[0]) == ".nii.gz"
    copied = copy_image(mhd, tmp_path / "out" / "seg.mha")
    np.testing.assert_array_equal(read_image(copied)[0], read_image(mhd)[0])
    assert (tmp_path / "out").is_dir() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg.mha"]
    files = item_files([{"image": str(series), "label": str(mhd)}])
    assert len(files) == 5 + 2 and files[-2:] == [str(mhd), str(tmp_path / "seg.zraw")]


def test_dataset_reads_a_dicom_image_with_a_nifti_label(tmp_path: Path, scan: tuple[Path, np.ndarray]) -> None:
    nifti, data = scan
    label = write_nifti(tmp_path / "seg.nii.gz", (data > 0).astype(np.uint8), oblique_affine(), dtype=np.uint8)
    series = write_dicom_series(nifti, tmp_path / "case_01")
    case = make_dataset([{"image": str(series), "label": str(label), "id": "case_01"}], num_classes=2,
                        normalization="none")[0]
    np.testing.assert_array_equal(case["image"][0].numpy(), data)
    assert case["meta"]["source"] == str(series) and int(case["label"].sum()) == int((data > 0).sum())
    shutil.rmtree(series)
    with pytest.raises(DataError, match="case_01"):
        make_dataset([{"image": str(series), "label": str(label)}], num_classes=2)
