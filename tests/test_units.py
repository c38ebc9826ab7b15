"""IntensityMap and Budget: conversions between HU, raw, model and 1/255 units."""
from __future__ import annotations

import math

import pytest
import torch

from medrobust.units import Budget, IntensityMap


def test_ct_window_round_trip_and_hu_budget() -> None:
    imap = IntensityMap.ct_window(-175, 250)
    raw = torch.tensor([-175.0, 37.5, 250.0])
    assert torch.allclose(imap.raw_to_model(raw), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(imap.model_to_raw(imap.raw_to_model(raw)), raw)
    budget = Budget.linf(8, unit="HU", intensity=imap)
    assert budget.eps.item() == pytest.approx(8 / 425)
    assert (budget.low.item(), budget.high.item()) == (0.0, 1.0)  # taken from the window's clip


def test_one_over_255_is_relative_to_the_valid_range() -> None:
    assert Budget.linf(4, unit="1/255", valid_range=(0, 1)).eps.item() == pytest.approx(4 / 255)
    assert Budget.linf(4, unit="1/255", valid_range=(-1, 1)).eps.item() == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="valid_range"):
        Budget.linf(4, unit="1/255")


def test_per_sample_z_score_budget() -> None:
    std = torch.tensor([100.0, 200.0])
    imap = IntensityMap.z_score(mean=torch.tensor([300.0, 500.0]), std=std)
    budget = Budget.linf(10, unit="raw", intensity=imap)
    x = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(budget.eps_for(x), torch.tensor([0.1, 0.05]))
    raw = torch.tensor([[400.0], [700.0]])
    assert torch.allclose(imap.raw_to_model(raw), torch.tensor([[1.0], [1.0]]))
    assert math.isinf(budget.low.item()) and imap.clip is None  # z-scored data is never clamped


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_stays_in_ball_range_and_mask(norm: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 6, 6)
    budget = getattr(Budget, norm)(0.1, valid_range=(0, 1))
    mask = (torch.rand(3, 1, 6, 6) > 0.5).float()
    proj = budget.project(x, x + torch.randn_like(x), mask)
    assert (budget.norm_of(proj - x) <= 0.1 + 1e-6).all()
    assert proj.min() >= 0 and proj.max() <= 1
    assert torch.equal((proj - x)[mask == 0], torch.zeros_like(x)[mask == 0])


@pytest.mark.parametrize("bad", [dict(eps=-1.0), dict(eps=float("nan")), dict(eps=1.0, unit="mm")])
def test_bad_budgets_name_the_argument(bad: dict) -> None:
    with pytest.raises(ValueError, match="eps"):
        Budget.linf(**bad)


def test_hu_needs_a_ct_map_and_serialisation_round_trips() -> None:
    with pytest.raises(ValueError, match="IntensityMap"):
        Budget.linf(8, unit="HU")
    with pytest.raises(ValueError, match="raw unit"):
        Budget.linf(8, unit="HU", intensity=IntensityMap.min_max(0, 1000))
    imap = IntensityMap.z_score(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    back = IntensityMap.from_dict(imap.to_dict())
    assert torch.equal(torch.as_tensor(back.scale, dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        IntensityMap(scale=0.0)
