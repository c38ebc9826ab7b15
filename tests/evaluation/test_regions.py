"""Region threat models: body, classes grown by a margin in mm, per-case mask files."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medrobust.evaluation.cases import prepare_case
from medrobust.evaluation.config import GridConfigError
from medrobust.evaluation.core import evaluate_run
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.regions import parse_region
from medrobust.evaluation.specs import AttackSpec
from medrobust.evaluation.types import RunSettings
from tests.evaluation.test_core import assets, loaded  # noqa: F401  (module fixture)
from tests.evaluation.test_grid import grid_yaml


def test_body_is_the_foreground_with_its_holes_filled() -> None:
    x = torch.zeros(1, 1, 12, 12, 12)
    x[..., 2:10, 2:10, 2:10] = 1.0
    x[..., 4:8, 4:8, 4:8] = 0.0  # "lungs": dark, but inside the body
    body = parse_region("body").mask(x, torch.zeros(1), [], "c", None)
    assert int(body.sum()) == 8 ** 3 and body.shape == x.shape


def test_class_region_grows_by_the_margin_in_mm() -> None:
    y = torch.zeros(1, 1, 9, 9, 9, dtype=torch.long)
    y[..., 4, 4, 4] = 1
    spacing = (1.0, 2.0, 3.0)
    grown = parse_region({"classes": ["fg"], "margin_mm": 3.0}).mask(torch.zeros(1, 1, 9, 9, 9), y, ["bg", "fg"],
                                                                   "c", spacing)[0, 0].numpy()
    idx = np.stack(np.meshgrid(*[np.arange(9)] * 3, indexing="ij"), -1)
    brute = (((idx - 4) * np.array(spacing)) ** 2).sum(-1) <= 9.0  # reference: distance to the voxel in mm
    assert np.array_equal(grown.astype(bool), brute)


def test_attack_changes_nothing_outside_its_region(assets: dict[str, Path]) -> None:  # noqa: F811
    lm = loaded(assets)
    settings = RunSettings(seed=0, config_hash="h")
    case = prepare_case(lm, lm.split.dataset[0], settings)
    spec = AttackSpec(attack="pgd", eps=[8], eps_unit="1/255", options={"steps": 2},
                      region={"classes": ["class1"], "margin_mm": 1})
    run = evaluate_run(lm, spec, 8.0, case, settings)
    region = spec.parsed_region.mask(case.x, case.y, lm.classes, case.id, case.spacing)
    assert float((run.x - case.x).abs().mul(1 - region).max()) == 0.0 and float((run.x - case.x).abs().max()) > 0
    assert run.row.region == "classes class1 + 1 mm"
    assert run.row.region_fraction == pytest.approx(float(region.mean())) and 0 < run.row.region_fraction < 1


def test_mask_files_are_read_per_case_relative_to_the_grid(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    lm = loaded(assets)
    (tmp_path / "masks").mkdir()
    for item in lm.split.dataset:
        shape = tuple(item["image"].shape[1:])
        data = np.zeros(shape, np.uint8)
        data[: shape[0] // 2] = 1
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "masks" / f"{item['id']}.nii.gz"))
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [{"attack": "fgsm", "eps": [8], "eps_unit": "1/255", "region": {"mask": "masks/{id}.nii.gz"}}]
    path.write_text(yaml.safe_dump(cfg))
    from medrobust.evaluation.store import ResultStore

    with ResultStore(run_grid(path, progress=False) / "results.sqlite") as store:
        df = store.to_dataframe()
    assert (df["region_fraction"] == 0.5).all() and df["region"].str.startswith("mask ").all()


@pytest.mark.parametrize("region, match", [
    ("everywhere", r"region"),
    ({"classes": ["tumour"]}, r"region: class tumour"),
    ({"mask": "missing/{id}.nii.gz"}, r"region: mask file"),
])
def test_bad_regions_are_named(tmp_path: Path, assets: dict[str, Path], region: object, match: str) -> None:  # noqa: F811
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [{"attack": "fgsm", "eps": [8], "eps_unit": "1/255", "region": region}]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises((GridConfigError, ValueError), match=match):
        run_grid(path, progress=False)
