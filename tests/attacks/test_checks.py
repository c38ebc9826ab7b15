"""Gradient-masking checks flag models that hide their gradient and pass plain ones."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import gradient_masking_check
from medrobust.units import Budget
from tests.attacks.test_gradient import BUDGET, trained_segmenter


class Rounding(nn.Module):
    """Quantises its input to 8 levels: the gradient through torch.round is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8


class Detaching(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


def classifier(front: nn.Module | None) -> nn.Module:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    return head if front is None else nn.Sequential(front, head)


def labelled(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)  # clean accuracy 1 by construction


def test_plain_classifier_is_not_flagged() -> None:
    model = classifier(None)
    x, y = labelled(model)
    report = gradient_masking_check(model, x, y, Budget.linf(0.3, valid_range=(0.0, 1.0)), steps=10, n_queries=100)
    assert not report.likely_masking, report.reasons
    assert report.loss_increases and report.metric_name == "accuracy"
    assert report.clean_metric == 1.0 and report.whitebox_metric <= report.blackbox_metric
    assert report.huge_eps_metric <= report.chance_metric
    assert len(report.loss_curve) == 11 and report.loss_curve[-1] > report.loss_curve[0]


@pytest.mark.parametrize("front", [Rounding(), Detaching()], ids=["round", "detach"])
def test_masked_gradient_is_flagged(front: nn.Module) -> None:
    model = classifier(front)
    x, y = labelled(model)
    report = gradient_masking_check(model, x, y, Budget.linf(0.3, valid_range=(0.0, 1.0)), steps=10, n_queries=100)
    assert report.likely_masking
    assert not report.loss_increases
    assert report.blackbox_metric < report.whitebox_metric
    assert report.huge_eps_metric > report.chance_metric
    assert len(report.reasons) == 3 and "likely gradient masking" in report.summary()


def test_trained_segmenter_is_not_flagged() -> None:
    model, x, y = trained_segmenter()
    report = gradient_masking_check(model, x, y, BUDGET, steps=10, n_queries=100)
    assert report.metric_name == "dice"
    assert not report.likely_masking, report.reasons
    assert report.huge_eps_metric < report.whitebox_metric < report.clean_metric


def test_l2_budget_compares_square_inside_the_l2_ball() -> None:
    model = classifier(None)
    x, y = labelled(model)
    report = gradient_masking_check(model, x, y, Budget.l2(3.0, valid_range=(0.0, 1.0)), steps=10, n_queries=50)
    assert not report.likely_masking, report.reasons
    assert report.whitebox_metric <= report.blackbox_metric
