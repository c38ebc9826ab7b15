"""Square attack: forward passes only, the p schedule, square/cube windows, 2D and 3D."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import Square
from medrobust.attacks.blackbox import _window, p_schedule
from medrobust.attacks.outcome import worse
from medrobust.units import Budget

BUDGET = Budget.linf(0.1, valid_range=(0.0, 1.0))


class NoGrad(nn.Module):
    """Fails if ever called with autograd on: Square must only query the model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad
        return self.inner(x)


def test_p_schedule_matches_the_reference_code() -> None:
    n = 10000
    assert [p_schedule(0.8, i, n) for i in (0, 10, 11, 50, 51, 500, 501, 8001, 9999)] == \
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.05, 0.8 / 512, 0.8 / 512]
    assert p_schedule(0.05, 5, 100) == 0.05 / 8  # 5 of 100 queries = 500 of 10 000: (200, 500]


@pytest.mark.parametrize("shape,side", [((9, 7), [3, 2]), ((5, 6, 7), [2, 3, 4])])
def test_window_is_one_box_of_the_given_sides(shape, side) -> None:
    win = _window(shape, side, 5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert win.shape == (5, 1, *shape) and win.dtype == torch.bool
    assert (win.flatten(1).sum(1) == torch.tensor(side).prod()).all()


def test_square_fools_a_classifier_with_queries_only() -> None:
    torch.manual_seed(0)
    model = NoGrad(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = Square(BUDGET.with_eps(0.3), n_queries=200, seed=0, early_stop=True).run(model, x, y)
    with torch.no_grad():
        fooled = model(result.x_adv).argmax(1) != y
    assert fooled.float().mean() >= 0.5
    queries = result.extra["queries"]
    assert (queries[fooled] < 201).all() and queries.max() <= 201
    assert ((result.x_adv - x).abs().amax((1, 2, 3)) <= 0.3 + 1e-6).all()


def test_square_3d_segmentation_raises_the_loss_monotonically() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 1))
    x = torch.rand(2, 1, 8, 8, 8)
    y = torch.randint(0, 3, (2, 1, 8, 8, 8))
    result = Square(BUDGET, n_queries=30, loss="ce", seed=1, keep="loss").run(NoGrad(model), x, y)
    h = result.loss_history
    assert h.shape == (31, 2)
    assert (h[1:] >= h[:-1]).all() and (h[-1] > h[0]).all()
    torch.testing.assert_close(result.best_loss, h[-1])
    assert torch.equal(result.extra["queries"], torch.full((2,), 31.0))


def test_square_is_reproducible_and_linf_only() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    a = Square(BUDGET, n_queries=10, seed=5)(model, x, y)
    b = Square(BUDGET, n_queries=10, seed=5)(model, x, y)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="linf"):
        Square(Budget.l2(1.0), n_queries=10)
    with pytest.raises(ValueError, match="n_queries"):
        Square(BUDGET, steps=10)


def reference_accepts(loss_new: torch.Tensor, loss_min: torch.Tensor, margin_new: torch.Tensor) -> torch.Tensor:
    """The reference's rule (square.py, attack_single_run, Linf), transcribed: its loss is -CE
    (minimised) and a candidate is kept if the loss improved or the sample is misclassified."""
    idx_improved = (loss_new < loss_min).float()
    idx_miscl = (margin_new <= 0.0).float()
    return torch.max(idx_improved, idx_miscl).bool()


def test_square_accepts_as_the_reference_for_ce() -> None:
    g = torch.Generator().manual_seed(0)
    logits_cur, logits_new = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g)
    y = logits_cur.argmax(1)  # not yet fooled: the reference only queries those
    ce_cur, ce_new = (nn.functional.cross_entropy(z, y, reduction="none") for z in (logits_cur, logits_new))
    other = logits_new.clone()
    other[torch.arange(500), y] = -torch.inf
    margin_new = logits_new[torch.arange(500), y] - other.amax(1)
    expected = reference_accepts(-ce_new, -ce_cur, margin_new)
    assert Square(BUDGET, loss="ce").keep == "metric"  # Square accepts by its keep rule
    ours = worse("metric", ce_new, -(logits_new.argmax(1) == y).float(), ce_cur, -torch.ones(500))
    assert torch.equal(ours, expected)
    assert (expected & (ce_new <= ce_cur)).any(), "the case the old rule got wrong must occur"


def test_square_counts_queries_until_the_sample_is_fooled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    stopped = Square(BUDGET.with_eps(0.3), n_queries=100, seed=0, early_stop=True).run(model, x, y)
    going = Square(BUDGET.with_eps(0.3), n_queries=100, seed=0).run(model, x, y)
    fooled = going.metric == 0
    assert fooled.any() and (~fooled).any()
    assert (going.extra["queries"][~fooled] == 101).all() and (going.extra["queries"][fooled] < 101).all()
    torch.testing.assert_close(stopped.extra["queries"], going.extra["queries"])  # same path until fooled
