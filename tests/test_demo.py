"""The demo's grid runs end to end (on a tiny phantom model in place of the trained demo UNet),
and its worst case never exceeds any single attack, which the report states."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.demo import demo_grid
from medrobust.evaluation import robustness as rb
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model
from medrobust.report.html import write_report


@pytest.mark.slow
def test_demo_grid_runs_and_worst_case_is_below_every_attack(tmp_path: Path) -> None:
    data = build_phantom_segmentation(tmp_path / "data", shape=(32, 32, 32), n_train=1, n_val=1, n_test=1)
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                      num_res_units=0)
    ckpt = save_checkpoint(tmp_path / "model", net, classes=["bg", "a", "b"], extra={"normalization": "zscore"})
    grid = demo_grid(ckpt, data / "dataset.json", tmp_path / "results", max_cases=1)
    grid["perturbations"][-1]["options"]["steps"] = 2  # VAFA: keep the test fast
    results = run_grid(parse_config(grid), progress=False)
    with ResultStore(results / "results.sqlite") as store:
        df = store.to_dataframe()
    attacks = {p.get("name", p["attack"]) for p in grid["perturbations"]}
    assert set(df["perturbation"]) == attacks and len(df) == 3 * 4 + 1 + 2  # 4 attacks x 3 eps, the ensemble, VAFA
    ensemble = df[df["attack"] == "seg-ensemble"]
    assert ensemble["method"].str.contains("short version").all()
    linf = df[df["norm"] == "linf"]
    worst = rb.worst_case_per_case(df)
    for _, w in worst[worst["norm"] == "linf"].iterrows():
        same = linf[(linf["eps_stated"] == w["eps_stated"]) & (linf["case_id"] == w["case_id"])]
        assert w["score"] <= same["adv_score"].min() + 1e-12
    html = write_report(results).read_text(encoding="utf-8")
    assert 'id="worst-case"' in html and "worst case" in html.lower()
    assert "VAFA q_max" in html  # the frequency budget is named as such, not as an L2 ball
