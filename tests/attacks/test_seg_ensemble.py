"""The seg-ensemble preset (Halmosi, Mohos & Jelasity 2024) and pixel-wise APGD-DLR for segmentation."""
from __future__ import annotations

import pytest
import torch

from medrobust.attacks import get_attack
from medrobust.attacks.outcome import sample_metric
from medrobust.attacks.registry import attack_names, attack_norms, attack_task
from medrobust.attacks.seg_ensemble import PAPER_STEPS, SegEnsemble, seg_ensemble
from medrobust.losses import dlr
from medrobust.units import Budget
from tests.attacks.test_gradient import trained_segmenter

LINF = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
STRONG = Budget.linf(0.08, valid_range=(0.0, 1.0))  # the budget of test_gradient's strength tests
MEMBERS = ["apgd-ce", "apgd-dlr", "apgd-dice_ce", "segpgd", "cospgd", "padam-ce", "padam-cos"]


def test_members_and_steps_follow_the_paper() -> None:
    ens = seg_ensemble(LINF)
    assert [n for n, _ in ens.members] == [*MEMBERS, "square"]
    assert {n: a.steps for n, a in ens.members} == {"apgd-ce": 300, "apgd-dlr": 300, "apgd-dice_ce": 300,
                                                    "segpgd": 300, "cospgd": 300, "padam-ce": 200, "padam-cos": 200,
                                                    "square": 5000}
    losses = {n: a.loss_name for n, a in ens.members}
    assert losses == {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-dice_ce": "dice_ce", "segpgd": "segpgd",
                      "cospgd": "cospgd", "padam-ce": "ce", "padam-cos": "cosine_distance", "square": "margin"}
    assert not ens.only_robust and "short" not in ens.describe() and "padam-cos (200 steps)" in ens.describe()
    assert [n for n, _ in seg_ensemble(Budget.l2(1.0, valid_range=(0.0, 1.0))).members] == MEMBERS  # no Square
    short = seg_ensemble(LINF, steps=20)
    assert {n: a.steps for n, a in short.members} == {**dict.fromkeys(PAPER_STEPS, 20), "square": 333}
    assert short.describe().endswith("short version, fewer steps than the paper")


def test_registered_for_segmentation_with_both_norms() -> None:
    assert "seg-ensemble" in attack_names()
    assert attack_norms("seg-ensemble") == ("linf", "l2") and attack_task("seg-ensemble") == "segmentation"
    ens = get_attack("seg-ensemble", LINF, steps=3, seed=1)
    assert isinstance(ens, SegEnsemble) and all(a.seed == 1 for _, a in ens.members)
    with pytest.raises(ValueError, match="stepz"):
        get_attack("seg-ensemble", LINF, stepz=3)
    with pytest.raises(ValueError, match="steps"):
        seg_ensemble(LINF, steps=0)


def test_ensemble_is_the_per_case_worst_of_its_members() -> None:
    model, x, y = trained_segmenter()
    result = seg_ensemble(STRONG, steps=5, seed=0).run(model, x, y)
    assert result.metric is not None
    members = torch.stack([result.extra[f"metric_{n}"] for n in [*MEMBERS, "square"]])
    assert not members.isnan().any()
    torch.testing.assert_close(result.metric, members.min(0).values)
    with torch.no_grad():
        torch.testing.assert_close(sample_metric(model(result.x_adv), y), result.metric)
        clean = sample_metric(model(x), y)
    assert (result.metric < clean).all()
    assert (result.x_adv - x).abs().max() <= 0.08 + 1e-6


def published_dlr(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein (2020): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), rows of (N, K) logits."""
    z_sorted = z.sort(dim=1).values
    z_y = z.gather(1, y[:, None])[:, 0]
    z_other = z.scatter(1, y[:, None], float("-inf")).max(1).values
    return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def test_apgd_dlr_is_pixel_wise_for_segmentation() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 5, 5, generator=g)
    y = torch.randint(0, 4, (2, 1, 5, 5), generator=g)
    per_pixel = torch.stack([published_dlr(z[b].flatten(1).T, y[b, 0].flatten()) for b in range(2)])
    torch.testing.assert_close(dlr(z, y), per_pixel.mean(1))  # DLR per voxel, then the mean per sample
    model, x, y_seg = trained_segmenter()
    with torch.no_grad():
        clean = sample_metric(model(x), y_seg)
    result = get_attack("apgd-dlr", STRONG, steps=20, seed=0).run(model, x, y_seg)
    assert result.metric is not None and float(result.metric.mean()) < float(clean.mean()) - 0.15
