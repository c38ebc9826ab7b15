"""APGD: checkpoints and step-size rule of Croce & Hein (2020), and strength against PGD."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.attacks import APGD, PGD, get_attack
from medrobust.attacks.apgd import apgd_checkpoints
from medrobust.attacks.outcome import sample_metric
from medrobust.units import Budget
from tests.attacks.test_gradient import BUDGET, trained_segmenter


def paper_checkpoints(n: int) -> list[int]:
    """w_j = ceil(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [math.ceil(round(v * n, 6)) for v in p[1:] if round(v * n, 6) < n]


@pytest.mark.parametrize("n", [100, 200, 1000])
def test_checkpoints_follow_the_paper(n: int) -> None:
    assert apgd_checkpoints(n) == paper_checkpoints(n)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


class Recording(APGD):
    """APGD that records its step size after each update."""

    def update(self, x, state, grad, gain, t):
        super().update(x, state, grad, gain, t)
        self.etas.append(state.aux["eta"].clone())


def test_step_size_halves_at_checkpoints_when_the_loss_stalls() -> None:
    class Flat(nn.Module):  # loss never improves: condition 1 holds at every checkpoint
        def forward(self, x):
            return torch.zeros(x.shape[0], 3) + x.sum() * 0

    budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
    attack = Recording(budget, steps=50)
    attack.etas = []
    attack.run(Flat(), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    etas = torch.stack(attack.etas)[:, 0]
    halvings = [t for t in range(1, len(etas)) if etas[t] < etas[t - 1]]
    # the check after w_j steps happens in update number w_j + 1 (1-based), i.e. index w_j
    assert halvings == apgd_checkpoints(50)
    assert torch.isclose(etas[0], torch.tensor(0.2))
    assert torch.isclose(etas[-1], torch.tensor(0.2 / 2 ** len(halvings)))


def test_step_size_is_kept_while_the_loss_keeps_rising() -> None:
    class Rising(nn.Module):  # every query scores a higher loss than the last
        calls = 0

        def forward(self, x):
            self.calls += 1
            return torch.zeros(x.shape[0], 3) + torch.tensor([float(self.calls), 0.0, 0.0]) + x.sum() * 0

    attack = Recording(Budget.linf(0.1, valid_range=(0.0, 1.0)), steps=20)
    attack.etas = []
    attack.run(Rising(), torch.rand(2, 1, 4, 4), torch.tensor([1, 2]))
    assert torch.allclose(torch.stack(attack.etas), torch.full((20, 2), 0.2))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_at_least_as_strong_as_pgd_with_the_same_steps(loss: str) -> None:
    model, x, y = trained_segmenter()
    pgd = PGD(BUDGET, steps=20, loss=loss, seed=0, keep="loss").run(model, x, y)
    apgd = APGD(BUDGET, steps=20, loss=loss, seed=0, keep="loss").run(model, x, y)
    assert apgd.best_loss.mean() >= pgd.best_loss.mean()
    torch.testing.assert_close(apgd.best_loss, apgd.loss_history.max(0).values)
    by_metric = APGD(BUDGET, steps=20, loss=loss, seed=0).run(model, x, y)  # same iterates, kept by Dice
    assert (by_metric.metric <= sample_metric(model(apgd.x_adv), y) + 1e-6).all()


def test_apgd_l2_and_named_variants() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)
    for name in ("apgd-ce", "apgd-dlr"):
        x_adv = get_attack(name, Budget.l2(3.0, valid_range=(0.0, 1.0)), steps=10, seed=0)(model, x, y)
        with torch.no_grad():
            assert (model(x_adv).argmax(1) != y).float().mean() >= 0.5, name
    with pytest.raises(ValueError, match="loss"):
        get_attack("apgd-ce", BUDGET, loss="dlr")
    with pytest.raises(ValueError, match="step_size"):
        APGD(BUDGET, step_size=0.1)
