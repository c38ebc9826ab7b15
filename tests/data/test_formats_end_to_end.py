"""The same scans as NIfTI, DICOM series and NRRD: equal clean Dice in the grid, outputs in the source's format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from medrobust.cli import main
from medrobust.data.io import write_nifti
from medrobust.data.phantoms import phantom_segmentation
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model
from tests.data.formats import oblique_affine, write_dicom_series, write_like

pytestmark = pytest.mark.slow
CLASSES = ["background", "class1", "class2"]


def _datalist(root: Path, name: str, entries: list[dict[str, str]]) -> Path:
    path = root / f"{name}.json"
    path.write_text(json.dumps({"labels": {str(k): c for k, c in enumerate(CLASSES)}, "training": [],
                                "test": entries}))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two test scans (integer HU-like values, oblique grid) as NIfTI, DICOM series and NRRD, and a tiny UNet."""
    root = tmp_path_factory.mktemp("formats")
    image, label = phantom_segmentation((16, 16, 16), 3, seed=3, batch=2)
    forms: dict[str, list[dict[str, str]]] = {"nifti": [], "dicom": [], "nrrd": []}
    for i in range(2):
        case = f"case_{i}"
        nifti = write_nifti(root / "nifti" / f"{case}.nii.gz", np.round(400 * image[i, 0].numpy() - 100),
                            oblique_affine())
        seg = write_nifti(root / "nifti" / f"{case}_seg.nii.gz", label[i, 0].numpy(), oblique_affine(), dtype=np.uint8)
        forms["nifti"].append({"image": str(nifti), "label": str(seg), "id": case})
        forms["dicom"].append({"image": str(write_dicom_series(nifti, root / "dicom" / case)), "label": str(seg),
                               "id": case})
        forms["nrrd"].append({"image": str(write_like(nifti, root / "nrrd" / f"{case}.nrrd")),
                              "label": str(write_like(seg, root / "nrrd" / f"{case}_seg.nrrd")), "id": case})
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                      num_res_units=0)
    out = {name: _datalist(root, name, entries) for name, entries in forms.items()}
    out["checkpoint"] = save_checkpoint(root / "ckpt", net, classes=CLASSES, extra={"normalization": "zscore"})
    out["root"] = root
    return out


def _grid(assets: dict[str, Path], form: str, out: Path) -> pd.DataFrame:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets[form]), "split": "test"},
           "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}],
           "out": str(out), "examples": 0, "save_adversarial": True}
    path = out.parent / f"{form}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_grid(path, progress=False)
    with ResultStore(out / "results.sqlite") as store:
        return store.to_dataframe().sort_values("case_id").set_index("case_id")


def test_dicom_and_nrrd_give_the_clean_dice_of_their_nifti(assets: dict[str, Path], tmp_path: Path) -> None:
    rows = {form: _grid(assets, form, tmp_path / form) for form in ("nifti", "dicom", "nrrd")}
    reference = rows["nifti"]["clean_score"]
    assert len(reference) == 2 and (reference > 0).all()
    for form in ("dicom", "nrrd"):
        pd.testing.assert_series_equal(rows[form]["clean_score"], reference, rtol=0, atol=1e-12)
        pd.testing.assert_series_equal(rows[form]["adv_score"], rows["nifti"]["adv_score"], rtol=0, atol=1e-9)
    # adversarial images: NRRD for NRRD sources, NIfTI for DICOM series (the manifest says so)
    manifests = {form: json.loads(next((tmp_path / form / "adversarial").rglob("manifest.json")).read_text(encoding="utf-8"))
                 for form in ("dicom", "nrrd")}
    assert {c["image"] for c in manifests["nrrd"]["cases"]} == {"case_0.nrrd", "case_1.nrrd"}
    assert {c["image"] for c in manifests["dicom"]["cases"]} == {"case_0.nii.gz", "case_1.nii.gz"}
    assert "DICOM series, which is not written" in manifests["dicom"]["cases"][0]["format"]
    adv = next((tmp_path / "nrrd" / "adversarial").rglob("case_0.nrrd"))
    source = sitk.ReadImage(str(assets["root"] / "nrrd" / "case_0.nrrd"))
    written = sitk.ReadImage(str(adv))
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-9)
    delta = sitk.GetArrayFromImage(written) - sitk.GetArrayFromImage(source)
    assert 0 < np.abs(delta).max() <= manifests["nrrd"]["cases"][0]["linf_raw"] + 1e-3


def test_predict_on_nrrd_writes_nrrd_in_the_source_geometry(assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["nrrd"]),
                 "--split", "test", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [c["prediction"] for c in manifest["cases"]] == ["case_0_pred.nrrd", "case_1_pred.nrrd"]
    assert manifest["cases"][0]["format"].startswith("NRRD (.nrrd), the source's format")
    for case in manifest["cases"]:
        source, pred = sitk.ReadImage(case["source"]), sitk.ReadImage(str(out / case["prediction"]))
        assert pred.GetSize() == source.GetSize() and pred.GetPixelID() == sitk.sitkInt16
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(pred, get)(), getattr(source, get)(), atol=1e-9, err_msg=get)
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}


def test_a_folder_with_two_dicom_series_exits_2_naming_it(assets: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_dicom_series(Path(assets["root"]) / "nifti" / "case_0.nii.gz", tmp_path / "two_series",
                                series_uid="1.2.3.4.1")
    write_dicom_series(Path(assets["root"]) / "nifti" / "case_0.nii.gz", folder, series_uid="1.2.3.4.2",
                       first_instance=100)
    entries = [{"image": str(folder), "label": str(Path(assets["root"]) / "nifti" / "case_0_seg.nii.gz")}]
    datalist = _datalist(tmp_path, "mixed", entries)
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(datalist), "split": "test"},
           "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}], "out": str(tmp_path / "out")}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", str(tmp_path / "grid.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: holds 2 DICOM series (1.2.3.4.1, 1.2.3.4.2)" in " ".join(err.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupt_keeps_nrrd_and_writes_nifti_for_dicom(assets: dict[str, Path], tmp_path: Path) -> None:
    for form, suffix in (("nrrd", ".nrrd"), ("dicom", ".nii.gz")):
        out = tmp_path / form
        assert main(["corrupt", "--data", str(assets[form]), "--split", "test", "--corruptions", "noise",
                     "--severities", "3", "--max-cases", "1", "--out", str(out)]) == 0
        entry = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["test"][0]
        assert entry["image"] == f"./imagesTs/case_0__noise_s3{suffix}"
        assert entry["label"] == f"./labelsTs/case_0{'.nrrd' if form == 'nrrd' else '.nii.gz'}"  # copied as it is
        corrupted = sitk.ReadImage(str(out / entry["image"]))
        reference = sitk.ReadImage(str(assets["root"] / "nrrd" / "case_0.nrrd"))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(corrupted, get)(), getattr(reference, get)(), atol=1e-5, err_msg=get)
        assert suffix in json.loads((out / "manifest.json").read_text(encoding="utf-8"))["images"]
