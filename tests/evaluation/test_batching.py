"""Issue 17, item 3: grid batching (``batch_size``, ``sw_batch_size``) gives the same rows as none,
and ``amp: true`` runs only the model's forward in bfloat16 (loss, step, projection and scores
in float32), recorded in the rows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from medrobust.data.sources import Split
from medrobust.evaluation.cases import prepare_case, prepare_cases
from medrobust.evaluation.config import load_config, parse_config
from medrobust.evaluation.core import AMP_NOTE, evaluate_run, perturb
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.specs import AttackSpec
from medrobust.evaluation.store import ResultStore
from medrobust.evaluation.types import LoadedModel, RunSettings
from medrobust.models.checkpoint import CheckpointInfo
from medrobust.models.wrappers import SlidingWindow
from medrobust.units import IntensityMap
from tests.evaluation.assets import tiny_grid_assets

VOLATILE = ["id", "seconds", "attack_seconds", "created"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_grid_assets(tmp_path_factory.mktemp("batching-assets"), n_test=3)


def _grid(folder: Path, assets: dict[str, Path], **extra: Any) -> Path:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets["datalist"]), "split": "test"},
           "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"},
                             {"attack": "pgd", "eps": [2, 8], "eps_unit": "1/255", "options": {"steps": 2}},
                             {"corruption": "noise", "severities": [2]}],
           "roi_size": [8, 8, 8],  # 16^3 volumes: every case goes through the sliding window
           "out": str(folder / "results"), "examples": 1, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "grid.yaml"


def _rows(out: Path) -> pd.DataFrame:
    with ResultStore(out / "results.sqlite") as store:
        df = store.to_dataframe()
    return df.drop(columns=VOLATILE).sort_values(["perturbation", "eps_stated", "case_id"]).reset_index(drop=True)


def test_rows_do_not_depend_on_the_batch_sizes(tmp_path: Path, assets: dict[str, Path]) -> None:
    one = _grid(tmp_path / "one", assets)
    batched = _grid(tmp_path / "batched", assets, batch_size=2, sw_batch_size=5)
    assert load_config(one).config_hash == load_config(batched).config_hash  # resumable under other batch sizes
    plain, fast = _rows(run_grid(one, progress=False)), _rows(run_grid(batched, progress=False))
    assert len(plain) == 3 * 4
    pd.testing.assert_frame_equal(plain, fast, check_exact=False, rtol=1e-6, atol=1e-7)
    assert (plain[["clean_score", "adv_score", "case_id", "perturbation"]] ==
            fast[["clean_score", "adv_score", "case_id", "perturbation"]]).all().all()


class _Counting(torch.nn.Module):
    """A 2D segmenter that records the batch size of each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.conv(x)


def test_prepare_cases_batches_consecutive_cases_of_one_shape() -> None:
    imap = IntensityMap(0.0, 1.0, (0.0, 1.0)).to_dict()
    shapes = [(8, 8), (8, 8), (12, 8), (8, 8), (8, 8), (8, 8)]
    items = [{"image": torch.rand(1, *s), "label": torch.randint(0, 2, (1, *s)), "id": f"c{i}",
              "meta": {"intensity": imap}} for i, s in enumerate(shapes)]
    net = _Counting()
    info = CheckpointInfo(path=Path("m.json"), architecture="demo", kwargs={}, classes=["bg", "fg"])
    lm = LoadedModel("m", net, info, Split(items, ["bg", "fg"], "segmentation", 2, 1, Path("."), "none"))
    settings = RunSettings(seed=0, config_hash="h")
    cases = list(prepare_cases(lm, items, settings, batch_size=2))
    assert [c.id for c in cases] == [f"c{i}" for i in range(6)]
    assert net.batches == [2, 1, 2, 1]  # a new shape closes a batch; so does a full one
    for c, item in zip(cases, items):
        alone = prepare_case(lm, item, settings)
        assert c.x.shape == alone.x.shape == (1, *item["image"].shape)
        assert torch.allclose(c.clean_logits, alone.clean_logits, atol=1e-6) and c.clean == alone.clean


def _phantom_case(roi: tuple[int, ...] | None) -> tuple[LoadedModel, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 3, padding=1))
    y = torch.zeros(1, 12, 12, 12, dtype=torch.long)
    y[:, 2:7], y[:, 7:11] = 1, 2
    x = (y.float() / 2 + 0.1 * torch.rand(1, 12, 12, 12)).clamp(0, 1)
    with torch.no_grad():  # a model that segments the phantom: Dice is not already 0 before the attack
        net[2].weight.zero_()
        net[0].weight.zero_()
        net[0].weight[:3, 0, 1, 1, 1] = torch.tensor([-4.0, 0.0, 8.0])  # bg below 0.5, a near 0.5, b near 1
        net[0].bias[:3] = torch.tensor([3.0, 0.0, -5.0])
        for k in range(3):
            net[2].weight[k, k, 1, 1, 1] = 1.0
        net[2].bias[1] = 1.0
    item = {"image": x, "label": y, "id": "c0", "meta": {"intensity": IntensityMap(0.0, 1.0, (0.0, 1.0)).to_dict()}}
    info = CheckpointInfo(path=Path("m.json"), architecture="demo", kwargs={}, classes=["bg", "a", "b"],
                          roi_size=roi)
    lm = LoadedModel("m", net.eval(), info, Split([item], ["bg", "a", "b"], "segmentation", 3, 1, Path("."), "none"))
    return lm, item


@pytest.mark.parametrize("roi", [None, (8, 8, 8)], ids=["whole", "sliding-window"])
def test_bf16_attack_stays_near_fp32_and_inside_its_budget(roi: tuple[int, ...] | None) -> None:
    lm, item = _phantom_case(roi)
    settings = RunSettings(seed=0, config_hash="h")
    case = prepare_case(lm, item, settings)
    assert isinstance(case.model, SlidingWindow) == (roi is not None)
    seen: list[torch.dtype] = []
    hook = lm.model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    runs = {}
    for amp in (False, True):
        spec = AttackSpec(attack="pgd", eps=[32], eps_unit="1/255", options={"steps": 5}, amp=amp)
        seen.clear()
        perturb(spec, 32.0, case, seed=0)  # the attack's forwards (window by window through SlidingWindow)
        assert set(seen) == {torch.bfloat16 if amp else torch.float32}
        runs[amp] = evaluate_run(lm, spec, 32.0, case, settings)
    hook.remove()
    fp32, bf16 = runs[False], runs[True]
    assert case.clean.score == 1.0 and fp32.row.adv_score < 0.8  # the attack bites
    assert abs(bf16.row.adv_score - fp32.row.adv_score) <= 0.05
    assert bf16.x.dtype == torch.float32
    # the projection runs in float32: |x_adv - x| <= eps up to the rounding of x + delta (one ulp of 1.0)
    ulp = torch.finfo(torch.float32).eps
    for run in (fp32, bf16):
        assert float((run.x - case.x).abs().max()) <= 32 / 255 + ulp and run.row.linf_model <= run.row.eps_model + ulp
        assert float(run.x.min()) >= 0.0 and float(run.x.max()) <= 1.0
    assert json.loads(bf16.row.options_json or "{}") == {"steps": 5, "amp": "bf16"}  # recorded in the row
    assert AMP_NOTE in (bf16.row.method or "") and AMP_NOTE not in (fp32.row.method or "")
    assert json.loads(fp32.row.options_json or "{}") == {"steps": 5}


def test_amp_key_changes_the_hash_only_when_on(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    entry = {"attack": "pgd", "eps": [4], "eps_unit": "1/255"}

    def cfg(**extra: Any) -> Any:
        return parse_config({"models": [{"name": "m", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
                             "perturbations": [{**entry, **extra}]}, tmp_path)

    assert cfg().config_hash == cfg(amp=False).config_hash != cfg(amp=True).config_hash
    assert cfg(amp=True).perturbations[0].label == "pgd"
