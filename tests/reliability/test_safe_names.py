"""Items 1 and 2: names from user data never leave --out, and two cases never share a file or a row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.data.safe_names import UniqueNames, safe_name
from medrobust.data.sources import open_split
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from tests.reliability.conftest import MakeData, files_outside, write_grid

HOSTILE = ["../../victim/labelsTs/mni_017", "/tmp/abs/escape", "..\\..\\win", "nul\x00byte", "..", "ok_id"]


@pytest.mark.parametrize("text", HOSTILE + ["Case1", "a" * 300])
def test_safe_name_stays_in_its_folder(tmp_path: Path, text: str) -> None:
    name = safe_name(text)
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert "\x00" not in name and "/" not in name and "\\" not in name and not name.startswith(".")


def test_unique_names_never_share_a_file() -> None:
    names = UniqueNames()
    got = [names.name(t, ".nii.gz") for t in [*HOSTILE, "CASE1", "case1", "case1"]]
    assert len({g.lower() for g in got[:-1]}) == len(got) - 1 and got[-1] == got[-2]
    assert got[HOSTILE.index("ok_id")] == "ok_id.nii.gz"  # safe ids keep their names


def test_predict_and_corrupt_write_hostile_ids_inside_out(tmp_path: Path, make_data: MakeData,
                                                          checkpoint: Path) -> None:
    cases = [{"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz", "id": case_id}
             for i, case_id in enumerate(HOSTILE[:4])]
    data = make_data(cases)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "deep" / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [c["id"] for c in manifest["cases"]] == HOSTILE[:4]
    assert all((out / c["prediction"]).is_file() for c in manifest["cases"])
    corrupted = tmp_path / "deep" / "corrupted"
    assert main(["corrupt", "--data", str(data), "--corruptions", "noise", "--severities", "1",
                 "--out", str(corrupted)]) == 0
    doc = json.loads((corrupted / "dataset.json").read_text(encoding="utf-8"))
    assert sorted(e["id"] for e in doc["test"]) == sorted(f"{c}__noise_s1" for c in HOSTILE[:4])
    assert all((corrupted / e["label"]).is_file() and (corrupted / e["image"]).is_file() for e in doc["test"])
    assert files_outside(tmp_path, tmp_path / "deep", before) == []


def test_same_file_name_in_two_folders_gives_two_cases(tmp_path: Path, make_data: MakeData,
                                                       checkpoint: Path) -> None:
    """Ids from file names that repeat become the shortest path that tells them apart (documented in
    data.datalists.unique_ids); predict writes both files, the grid stores both rows, and a model
    named ../ESCAPED_model keeps its adversarial images inside out."""
    data = make_data([{"image": f"images/{site}/case1.nii.gz", "label": f"labels/{site}/case1.nii.gz"}
                      for site in ("siteA", "siteB")])
    split = open_split(data, "test")
    assert [split.dataset[i]["id"] for i in range(2)] == ["siteA/case1", "siteB/case1"]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
    assert len(list(out.glob("*_pred.nii.gz"))) == 2
    grid = write_grid(tmp_path / "grid", checkpoint, data, save_adversarial=True,
                      models=[{"name": "../ESCAPED_model", "checkpoint": str(checkpoint)}])
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    results = run_grid(grid, progress=False)
    with ResultStore(results / "results.sqlite") as store:
        assert sorted(store.to_dataframe()["case_id"]) == ["siteA/case1", "siteB/case1"]
    assert files_outside(tmp_path, results, before) == []
    assert len(list((results / "adversarial").rglob("*.nii.gz"))) == 2


def test_repeated_explicit_ids_are_an_error_naming_the_datalist(tmp_path: Path, make_data: MakeData,
                                                                checkpoint: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([{"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz", "id": "p1"}
                      for i in range(2)])
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "'p1'" in err and "unique" in err
    assert not out.exists()
