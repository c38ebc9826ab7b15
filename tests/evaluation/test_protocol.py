"""The papers' evaluation protocol: Dice and HD95 with background, normalised surface Dice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.metrics import compute_dice, compute_surface_dice
from monai.networks.utils import one_hot

from medrobust.evaluation.cases import score
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from tests.evaluation.test_grid import assets, grid_yaml  # noqa: F401  (module fixture)

CLASSES = ["background", "a", "b"]


def labels(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (1, 1, 10, 10, 10), generator=g)


def test_background_switch_matches_monai() -> None:
    y, pred = labels(0), labels(1)
    logits = one_hot(pred, 3).float()
    with_bg = score(logits, y, CLASSES, include_background=True)
    without = score(logits, y, CLASSES)
    ref = compute_dice(one_hot(pred, 3), one_hot(y, 3), include_background=True)[0]
    assert list(with_bg.per_class) == CLASSES and list(without.per_class) == CLASSES[1:]
    assert with_bg.score == pytest.approx(float(ref.mean())) and without.score == pytest.approx(float(ref[1:].mean()))


def test_surface_dice_matches_monai_with_the_spacing() -> None:
    y, pred = labels(0), labels(1)
    spacing = [1.0, 2.0, 0.5]
    out = score(one_hot(pred, 3).float(), y, CLASSES, spacing, nsd_mm=1.5)
    ref = compute_surface_dice(one_hot(pred, 3), one_hot(y, 3), [1.5, 1.5], spacing=spacing)[0]
    assert np.allclose(list(out.nsd.values()), ref.tolist())


def test_grid_switch_reaches_the_rows(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg.update(include_background=True, metrics=["dice", "nsd"], nsd_tolerance_mm=2.0,
               perturbations=[{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}])
    path.write_text(yaml.safe_dump(cfg))
    with ResultStore(run_grid(path, progress=False) / "results.sqlite") as store:
        df = store.to_dataframe()
    assert df["clean_per_class"].map(lambda d: "background" in d).all()
    assert df["adv_nsd"].map(lambda d: set(d) == {"background", "class1", "class2"}).all()


def test_report_states_the_background_protocol(tmp_path: Path) -> None:
    import json

    from medrobust.report.html import write_report
    from tests.report.test_report import make_results

    results = make_results(tmp_path)
    assert "background excluded" in write_report(results).read_text(encoding="utf-8")
    with ResultStore(results / "results.sqlite") as store:
        store.con.execute("UPDATE meta SET value = ? WHERE key = 'config_json'",
                          (json.dumps({"examples": 2, "include_background": True}),))
        store.con.commit()
    assert "background included" in write_report(results).read_text(encoding="utf-8")
