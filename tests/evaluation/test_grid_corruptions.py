"""Corruptions in the grid: one row per (model, corruption, severity, case), resume, summaries, report."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.evaluation import robustness as rb
from medrobust.evaluation.config import GridConfigError, load_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.evaluation.thumbnails import THUMBNAILS_DIR, load_thumbnail, thumbnail_name
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model
from medrobust.report import write_report

VOLATILE = ["id", "seconds", "attack_seconds", "created"]
PERTURBATIONS = [{"corruption": "motion", "severities": [1, 3]},
                 {"corruption": "noise", "name": "noise-axial", "severities": [1, 2, 5], "options": {"through_plane": 2}},
                 {"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}]



@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grid-corruptions")
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=1, n_val=1, n_test=2)
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                      num_res_units=0)
    ckpt = save_checkpoint(root / "ckpt", net, classes=["background", "class1", "class2"],
                           extra={"normalization": "zscore"})
    return {"datalist": data / "dataset.json", "checkpoint": ckpt}


def grid_yaml(folder: Path, assets: dict[str, Path], perturbations: list[dict] = PERTURBATIONS) -> Path:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])},
                      {"name": "twin", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets["datalist"]), "split": "test"},
           "perturbations": perturbations, "out": "results", "examples": 1}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "grid.yaml"


def runs(out: Path) -> pd.DataFrame:
    with ResultStore(out / "results.sqlite") as store:
        df = store.to_dataframe()
    return df.drop(columns=VOLATILE).sort_values(["model", "perturbation", "eps_stated", "case_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, assets: dict[str, Path]) -> Path:
    return run_grid(grid_yaml(tmp_path_factory.mktemp("grid"), assets), progress=False)


def test_one_row_per_corruption_severity_and_case(results: Path) -> None:
    df = runs(results)
    assert len(df) == 2 * 2 * (2 + 3 + 1)  # models x cases x (severities + eps)
    assert not df.duplicated(["model", "perturbation", "eps_stated", "case_id"]).any()
    cor = df[df["kind"] == "corruption"]
    assert len(cor) == 2 * 2 * 5 and (cor["eps_unit"] == "severity").all() and cor["norm"].isna().all()
    assert set(cor.loc[cor["perturbation"] == "noise-axial", "eps_stated"]) == {1.0, 2.0, 5.0}
    assert set(cor["attack"]) == {"motion", "noise"} and (cor["linf_model"] > 0).all() and cor["ssim"].lt(1).all()
    params = json.loads(cor.iloc[0]["options_json"])["params"]
    assert params["severity"] == int(cor.iloc[0]["eps_stated"]) and "derived_seed" in params
    # the corrupted image is the same for every model: same achieved change per (entry, severity, case)
    keys = ["perturbation", "eps_stated", "case_id"]
    by_model = cor.pivot_table(index=keys, columns="model", values="l2_model")
    assert np.allclose(by_model["tiny"], by_model["twin"])


def test_corruptions_never_enter_the_worst_case_over_attacks(results: Path) -> None:
    df = runs(results)
    per_case = rb.worst_case_per_case(df)
    assert set(per_case["worst_attack"]) == {"fgsm"} and (per_case["n_attacks"] == 1).all()
    assert set(rb.attack_curves(df)["perturbation"]) == {"fgsm"}


def test_summaries_follow_the_stated_formula(results: Path) -> None:
    df = runs(results)
    curves = rb.corruption_curves(df)
    motion = curves[(curves["model"] == "tiny") & (curves["perturbation"] == "motion")].set_index("severity")["score"]
    rows = df[(df["model"] == "tiny") & (df["perturbation"] == "motion")]
    assert list(motion.index) == [0.0, 1.0, 3.0]
    assert motion[0.0] == pytest.approx(rows.drop_duplicates("case_id")["clean_score"].mean())
    assert motion[3.0] == pytest.approx(rows[rows["eps_stated"] == 3]["adv_score"].mean())
    ce = rb.corruption_errors(df).set_index(["model", "perturbation"])
    assert ce.loc[("tiny", "motion"), "ce"] == pytest.approx((motion[0.0] - motion[[1.0, 3.0]].mean()) / motion[0.0])
    summary = rb.corruption_summary(df).set_index("model")
    tiny = curves[(curves["model"] == "tiny") & (curves["severity"] > 0)]["score"]
    assert summary.loc["tiny", "mean"] == pytest.approx(tiny.mean())
    assert summary.loc["tiny", "mce"] == pytest.approx(ce.loc["tiny", "ce"].mean())


@pytest.mark.slow
def test_thumbnails_and_the_report_section(results: Path) -> None:
    folder = results / "examples" / THUMBNAILS_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [thumbnail_name("motion", s) for s in (1, 3)] + [thumbnail_name("noise-axial", s) for s in (1, 2, 5)])
    thumb = load_thumbnail(folder / thumbnail_name("motion", 3))
    assert thumb["clean"].shape == thumb["corrupted"].shape == (16, 16) and thumb["info"]["case_id"] == "phantom_002"
    assert not np.allclose(thumb["clean"], thumb["corrupted"])
    html = write_report(results).read_text(encoding="utf-8")
    section = html[html.index('<section id="corruptions">'):]
    section = section[:section.index("</section>")]
    assert 'href="#corruptions"' in html and "CE<sub>c</sub>" in section and "mCE" in section
    pngs = re.findall(r'src="data:image/png;base64,([^"]*)"', section)
    assert len(pngs) == 3  # a severity curve per model + the thumbnails
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "noise-axial" in section and "severity 5" in html  # quality table states severities


def test_resume_recomputes_only_missing_rows_with_the_same_numbers(tmp_path: Path, assets: dict[str, Path],
                                                                   results: Path) -> None:
    out = run_grid(grid_yaml(tmp_path, assets), progress=False)
    full = runs(out)
    pd.testing.assert_frame_equal(full, runs(results))  # a second grid gives the same numbers
    with sqlite3.connect(out / "results.sqlite") as con:  # a crash after some corruption rows
        con.execute("DELETE FROM runs WHERE kind = 'corruption' AND case_id = 'phantom_003' AND eps_stated > 1")
    assert len(runs(out)) < len(full)
    run_grid(load_config(tmp_path / "grid.yaml"), progress=False)
    pd.testing.assert_frame_equal(runs(out), full)


@pytest.mark.slow
def test_corruption_only_grid_reports_without_attacks(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = run_grid(grid_yaml(tmp_path, assets, [{"corruption": "gamma", "severities": [4]}]), progress=False)
    html = write_report(out).read_text(encoding="utf-8")
    assert '<section id="corruptions">' in html and "holds no runs yet" not in html
    assert "mean foreground Dice of tiny averages" in html


@pytest.mark.parametrize(("entry", "where"), [
    ({"corruption": "wobble", "severities": [1]}, "perturbations[0].corruption"),
    ({"corruption": "noise", "severities": [6]}, "perturbations[0].severities[0]"),
    ({"corruption": "noise", "severities": [1], "options": {"axis": 1}}, "perturbations[0].options"),
    ({"corruption": "noise", "severities": [1], "options": {"through_plane": 3}}, "perturbations[0].options"),
])
def test_bad_corruption_entries_name_the_key(tmp_path: Path, assets: dict[str, Path], entry: dict, where: str) -> None:
    with pytest.raises(GridConfigError, match=re.escape(where)):
        run_grid(grid_yaml(tmp_path, assets, [entry]), progress=False)
    assert not (tmp_path / "results").exists()
