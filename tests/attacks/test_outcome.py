"""Which iterate an attack keeps (attacks/outcome.py): the one that hurts the metric."""
from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from medrobust.attacks import APGD, BIM, PGD
from medrobust.attacks.outcome import foreground_dice, sample_metric
from medrobust.metrics import dice_per_class
from medrobust.units import Budget

BUDGET = Budget.linf(2.0)  # model units, unbounded range: the scripted models' input s moves 0 -> 1 -> 2


class Scripted(nn.Module):
    """Logits piecewise linear in s = mean(x), knots at s = 0, 1, 2 (one row of logits per knot)."""

    def __init__(self, knots: list[list[float]], spatial: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.knots = torch.tensor(knots)  # (3, K) or (3, K, *spatial) flattened per voxel
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1)
        seg = (s >= 1).long()  # the segment [0, 1) or [1, 2]
        lo, hi = self.knots[seg], self.knots[seg + 1]
        frac = (s - seg.to(s)).reshape(-1, *([1] * (lo.ndim - 1)))
        logits = lo + frac * (hi - lo)
        return logits.reshape(x.shape[0], -1, *self.spatial)


def bim_path(model: nn.Module, y: torch.Tensor, keep: str) -> torch.Tensor:
    x = torch.zeros(1, 1, 1, 1)
    return BIM(BUDGET, steps=2, step_size=1.0, keep=keep).run(model, x, y)


def test_bim_returns_the_misclassified_iterate_not_the_highest_loss() -> None:
    # class 0 is right at s = 0 (CE 0.10), class 1 wins at s = 1 (CE 0.81), class 0 again at s = 2 (CE 1.07)
    model = Scripted([[0.0, -3.0, -3.0], [0.0, 0.1, -2.0], [0.0, -0.05, -0.05]])
    y = torch.tensor([0])
    ce = [float(nn.functional.cross_entropy(model(torch.full((1, 1, 1, 1), s)), y)) for s in (0.0, 1.0, 2.0)]
    assert ce[0] < ce[1] < ce[2], "the scripted loss must rise along the path"
    by_metric, by_loss = bim_path(model, y, "metric"), bim_path(model, y, "loss")
    assert float(by_loss.x_adv) == pytest.approx(2.0) and int(model(by_loss.x_adv).argmax(1)) == 0
    assert float(by_metric.x_adv) == pytest.approx(1.0) and int(model(by_metric.x_adv).argmax(1)) == 1
    assert float(by_metric.metric) == 0.0 and float(by_metric.best_loss) == pytest.approx(ce[1], abs=1e-5)


def test_segmentation_keeps_the_lowest_dice_when_loss_and_dice_disagree() -> None:
    # 4 foreground voxels; logits [f0, 0]: s = 1 flips all four (Dice 0, CE 0.74),
    # s = 2 flips one very confidently (Dice 0.86, CE 1.49)
    f0 = [[-3.0] * 4, [0.1] * 4, [5.0, -1.0, -1.0, -1.0]]
    knots = [[row, [0.0] * 4] for row in f0]
    model = Scripted(knots, spatial=(1, 2, 2))
    y = torch.ones(1, 1, 1, 2, 2, dtype=torch.long)
    x = torch.zeros(1, 1, 1, 2, 2)
    attack = dict(steps=2, step_size=1.0, loss="ce")
    by_metric = BIM(BUDGET, **attack).run(model, x, y)
    by_loss = BIM(BUDGET, keep="loss", **attack).run(model, x, y)
    assert float(by_loss.x_adv.mean()) == pytest.approx(2.0)
    assert float(by_metric.x_adv.mean()) == pytest.approx(1.0)
    assert float(sample_metric(model(by_metric.x_adv), y)) == 0.0
    assert float(sample_metric(model(by_loss.x_adv), y)) == pytest.approx(6 / 7)
    assert float(by_loss.best_loss) > float(by_metric.best_loss)


def test_restarts_keep_the_worst_outcome_over_restarts() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    budget = Budget.linf(16, unit="1/255", valid_range=(0.0, 1.0))
    many = PGD(budget, steps=3, restarts=4, seed=0).run(model, x, y)
    one = PGD(budget, steps=3, restarts=1, seed=0).run(model, x, y)
    assert (many.metric <= one.metric).all()  # restart 0 of `many` is `one`
    torch.testing.assert_close(many.metric, sample_metric(model(many.x_adv), y))


def test_foreground_dice_matches_monai_dice_per_class() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (3, 1, 5, 6, 7), generator=g)
    pred = torch.randint(0, 4, (3, 1, 5, 6, 7), generator=g)
    pred[0] = y[0]
    pred[1][pred[1] == 3] = 0
    y[1][y[1] == 3] = 0  # class 3 absent from both: scores 1
    ref = dice_per_class(pred, y, 4).mean(1)
    torch.testing.assert_close(foreground_dice(pred, y, 4), ref)


@contextmanager
def counted_syncs() -> Iterator[list[str]]:
    """Count medrobust's calls of the tensor methods that copy to the host (item, cpu, tolist, bool).

    Only calls made from medrobust's own code count: MONAI's Dice loss calls ``tolist`` on
    a CPU ``arange`` of the axes, which never waits for a device.
    """
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "cpu", "tolist", "__bool__")}

    def counting(name: str):  # noqa: ANN202 - a wrapper of any tensor method
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            caller = traceback.extract_stack(limit=2)[0]
            if f"{os.sep}medrobust{os.sep}" in caller.filename:
                calls.append(f"{name} {caller.filename}:{caller.lineno}")
            return originals[name](self, *args, **kwargs)
        return wrapper

    try:
        for name in originals:
            setattr(torch.Tensor, name, counting(name))
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("attack", [PGD, APGD])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_no_host_sync_per_step(attack: type, norm: str) -> None:
    torch.manual_seed(0)
    model = nn.Conv3d(1, 3, 3, padding=1)
    x, y = torch.rand(2, 1, 6, 6, 6), torch.randint(0, 3, (2, 1, 6, 6, 6))
    budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0)) if norm == "linf" else \
        Budget.l2(0.5, valid_range=(0.0, 1.0))
    calls = {}
    for steps in (4, 16):
        with counted_syncs() as calls[steps]:
            attack(budget, steps=steps, loss="dice_ce", early_stop=0.1, seed=0).run(model, x, y)
    assert len(calls[4]) == len(calls[16]), f"host syncs grow with the steps: {calls[16]}"


@pytest.mark.gpu
def test_segmentation_early_stop_runs_on_cuda() -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Conv3d(1, 3, 3, padding=1).to(dev)
    x, y = torch.rand(2, 1, 8, 8, 8, device=dev), torch.randint(0, 3, (2, 1, 8, 8, 8), device=dev)
    budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
    result = PGD(budget, steps=5, loss="dice_ce", early_stop=0.2, seed=0).run(model, x, y)
    assert result.x_adv.device.type == "cuda" and result.metric is not None and result.metric.device.type == "cuda"
    torch.testing.assert_close(result.metric, sample_metric(model(result.x_adv), y))


def test_ensemble_members_get_the_budget_of_their_subset() -> None:
    from medrobust.attacks import FGSM, AttackEnsemble

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(4, 1, 4, 4)
    y = model(x).argmax(1)
    budget = Budget.linf(torch.tensor([0.0, 0.3, 0.0, 0.3]), valid_range=(0.0, 1.0))  # per-sample eps
    first = PGD(budget, steps=10, seed=0)
    result = AttackEnsemble(budget, [("pgd", first), ("fgsm", FGSM(budget))]).run(model, x, y)
    moved = (result.x_adv - x).abs().flatten(1).amax(1)
    assert (moved <= torch.tensor([0.0, 0.3, 0.0, 0.3]) + 1e-6).all()
