"""VAFA in the grid: its own frequency budget (norm "dct", eps = q_max), kept apart from the
L-inf worst case."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.evaluation import robustness as rb
from medrobust.evaluation.config import GridConfigError, parse_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model


def _config(root: Path, vafa: dict) -> dict:
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=1, n_val=1, n_test=2)
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                      num_res_units=0)
    ckpt = save_checkpoint(root / "ckpt", net, classes=["bg", "a", "b"], extra={"normalization": "zscore"})
    return {"models": [{"name": "tiny", "checkpoint": str(ckpt)}],
            "data": {"datalist": str(data / "dataset.json"), "split": "test"},
            "perturbations": [{"attack": "pgd", "eps": [4], "eps_unit": "1/255", "options": {"steps": 2}}, vafa],
            "out": str(root / "results")}


@pytest.mark.parametrize("vafa,key", [({"attack": "vafa3d", "eps": [20], "eps_unit": "1/255"}, "norm"),
                                      ({"attack": "vafa3d", "norm": "dct", "eps": [0.5], "eps_unit": "1/255"}, "eps"),
                                      ({"attack": "pgd", "norm": "dct", "eps": [4], "eps_unit": "1/255"}, "norm")])
def test_frequency_budget_belongs_to_vafa_alone(tmp_path: Path, vafa: dict, key: str) -> None:
    with pytest.raises(GridConfigError, match=key):
        parse_config(_config(tmp_path, vafa))


def test_vafa_rows_form_their_own_group(tmp_path: Path) -> None:
    vafa = {"attack": "vafa3d", "norm": "dct", "eps": [4, 20], "eps_unit": "1/255",
            "options": {"steps": 2, "block_size": [8, 8, 8]}}
    out = run_grid(parse_config(_config(tmp_path, vafa)), progress=False)
    with ResultStore(out / "results.sqlite") as store:
        df = store.to_dataframe()
    vafa_rows = df[df["attack"] == "vafa3d"]
    assert len(vafa_rows) == 4 and set(vafa_rows["norm"]) == {"dct"}
    assert (vafa_rows["linf_model"] > 0).all()  # q_max 4 and 20 both change the image
    worst = rb.worst_case_per_case(df)
    linf = worst[worst["norm"] == "linf"]
    assert set(linf["worst_attack"]) == {"pgd"}  # VAFA never joins the L-inf ensemble
