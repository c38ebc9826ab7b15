"""Gradient attacks on a small segmentation model trained here on 2D ellipse phantoms:
strength, eps monotonicity, best-iterate tracking, units, early stop and bad input."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from medrobust.attacks import APGD, BIM, FGSM, MIFGSM, PGD, get_attack
from medrobust.attacks.base import sample_metric
from medrobust.losses import get_loss
from medrobust.units import Budget, IntensityMap


def phantoms(n: int, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) in [0, 1] and labels (n, 1, size, size): an ellipse (1)
    holding a smaller brighter one (2) on a dark noisy background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images, labels = [], []
    for _ in range(n):
        c = (torch.rand(2, generator=g) - 0.5) * 0.4
        r = 0.45 + 0.3 * torch.rand(2, generator=g)
        outer = ((yy - c[0]) / r[0]) ** 2 + ((xx - c[1]) / r[1]) ** 2 <= 1
        inner = ((yy - c[0]) / (0.45 * r[0])) ** 2 + ((xx - c[1]) / (0.45 * r[1])) ** 2 <= 1
        lab = outer.long() + inner.long()
        img = 0.15 + 0.4 * outer.float() + 0.3 * inner.float() + 0.05 * torch.randn(size, size, generator=g)
        images.append(img.clamp(0, 1))
        labels.append(lab)
    return torch.stack(images)[:, None], torch.stack(labels)[:, None]


@functools.lru_cache(maxsize=1)
def trained_segmenter() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-class 2D conv net trained on 12 phantoms; returns (model, x_test, y_test)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                          nn.ReLU(), nn.Conv2d(8, 3, 1))
    x, y = phantoms(12, size=20, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y[:, 0]).backward()
        opt.step()
    x_test, y_test = phantoms(4, size=20, seed=1)
    return model, x_test, y_test


def dice_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(sample_metric(model(x), y).mean())


BUDGET = Budget.linf(0.08, valid_range=(0.0, 1.0))
GRADIENT_ATTACKS = [FGSM(BUDGET), BIM(BUDGET, steps=10), PGD(BUDGET, steps=10, seed=0),
                    MIFGSM(BUDGET, steps=10), APGD(BUDGET, steps=10, seed=0)]


def test_trained_model_segments_well() -> None:
    model, x, y = trained_segmenter()
    assert dice_of(model, x, y) > 0.85


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS, ids=lambda a: a.name)
def test_every_gradient_attack_lowers_dice(attack) -> None:
    model, x, y = trained_segmenter()
    clean = dice_of(model, x, y)
    assert dice_of(model, attack(model, x, y), y) < clean - 0.1


@pytest.mark.parametrize("loss", ["ce", "dice", "dice_ce", "segpgd", "cospgd", "dlr"])
def test_every_loss_lowers_dice(loss: str) -> None:
    model, x, y = trained_segmenter()
    x_adv = PGD(BUDGET, steps=10, loss=loss, seed=0)(model, x, y)
    # pixel-wise DLR is scale-free per voxel and spends its steps on already-wrong voxels:
    # weaker for segmentation, but it must still lower Dice
    drop = 0.02 if loss == "dlr" else 0.1
    assert dice_of(model, x_adv, y) < dice_of(model, x, y) - drop


def test_l2_pgd_lowers_dice() -> None:
    model, x, y = trained_segmenter()
    x_adv = PGD(Budget.l2(2.0, valid_range=(0.0, 1.0)), steps=10, seed=0)(model, x, y)
    assert dice_of(model, x_adv, y) < dice_of(model, x, y) - 0.1


def test_dice_drops_more_at_larger_eps() -> None:
    model, x, y = trained_segmenter()
    dices = [dice_of(model, PGD(BUDGET.with_eps(e), steps=10, seed=0)(model, x, y), y) for e in (0.02, 0.06, 0.15)]
    assert dices[0] > dices[1] > dices[2]


def test_targeted_attack_moves_prediction_to_the_target() -> None:
    model, x, y = trained_segmenter()
    target = torch.zeros_like(y)  # erase every structure
    result = PGD(BUDGET, steps=10, targeted=True, seed=0).run(model, x, target)
    with torch.no_grad():
        before = (model(x).argmax(1) == 0).float().mean()
        after = (model(result.x_adv).argmax(1) == 0).float().mean()
        clean_loss = get_loss("ce")(model(x), target)
    assert after > before + 0.03
    assert (result.best_loss < clean_loss).all()
    torch.testing.assert_close(result.best_loss, result.loss_history.min(0).values)


def test_returned_iterate_is_the_best_of_the_history() -> None:
    model, x, y = trained_segmenter()
    # a step as large as eps makes the loss oscillate, so the last iterate is often not the best
    result = PGD(BUDGET, steps=8, step_size=0.08, restarts=2, seed=3).run(model, x, y)
    assert result.loss_history.shape == (2 * 9, 4)
    torch.testing.assert_close(result.best_loss, result.loss_history.max(0).values)
    with torch.no_grad():
        again = get_loss("ce")(model(result.x_adv), y)
    torch.testing.assert_close(again, result.best_loss, atol=1e-5, rtol=1e-5)
    assert (result.loss_history[-1] < result.best_loss).any()
    last = PGD(BUDGET, steps=8, step_size=0.08, seed=3, return_best=False).run(model, x, y)
    assert last.loss_history.shape == (9, 4)
    assert last.loss_history[-1].isnan().all() and last.best_loss.isnan().all()  # returned unevaluated
    torch.testing.assert_close(last.loss_history[:-1], result.loss_history[:8])  # same first restart
    assert not torch.equal(last.x_adv, result.x_adv)


def test_segpgd_history_is_comparable_across_steps() -> None:
    model, x, y = trained_segmenter()
    result = PGD(BUDGET, steps=6, loss="segpgd", seed=0).run(model, x, y)
    with torch.no_grad():
        final_form = get_loss("segpgd")(model(result.x_adv), y, step=6, total_steps=6)
    torch.testing.assert_close(final_form, result.best_loss, atol=1e-5, rtol=1e-5)


def test_budget_in_hu_bounds_the_change_in_hu() -> None:
    model, x, y = trained_segmenter()
    imap = IntensityMap.ct_window(-175, 250)
    budget = Budget.linf(8, unit="HU", valid_range=(0.0, 1.0), intensity=imap)
    x_adv = PGD(budget, steps=10, seed=0)(model, x, y)
    change_hu = (imap.model_to_raw(x_adv) - imap.model_to_raw(x)).abs().amax()
    assert 7.9 < float(change_hu) <= 8.0 + 1e-3


def test_mask_restricts_the_attack_to_a_region() -> None:
    model, x, y = trained_segmenter()
    mask = torch.zeros_like(y)
    mask[..., :12, :] = 1
    x_adv = PGD(BUDGET, steps=5, seed=0)(model, x, y, mask)
    assert torch.equal(x_adv[..., 12:, :], x[..., 12:, :])
    assert (x_adv[..., :12, :] - x[..., :12, :]).abs().amax() > 0.07


def test_early_stop_freezes_failed_samples() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)
    result = BIM(Budget.linf(0.5, valid_range=(0.0, 1.0)), steps=10, early_stop=True).run(model, x, y)
    with torch.no_grad():
        assert (model(result.x_adv).argmax(1) != y).all()
    h = result.loss_history
    assert (h[-1] == h[-2]).all(), "failed samples must stop moving"


def test_early_stop_for_segmentation_needs_a_dice_threshold() -> None:
    model, x, y = trained_segmenter()
    with pytest.raises(ValueError, match="early_stop"):
        PGD(BUDGET, steps=2, early_stop=True)(model, x, y)
    stopped = PGD(BUDGET, steps=10, early_stop=0.9, seed=0)(model, x, y)
    full = PGD(BUDGET, steps=10, seed=0)(model, x, y)
    with torch.no_grad():
        dice_stopped = sample_metric(model(stopped), y)
        assert (dice_stopped <= 0.9).all()
        assert dice_stopped.mean() > sample_metric(model(full), y).mean(), "stopping early should do less"


def test_bad_input_raises_clear_errors() -> None:
    model, x, y = trained_segmenter()
    with pytest.raises(ValueError, match="steps"):
        PGD(BUDGET, steps=0)
    with pytest.raises(ValueError, match="mask"):
        PGD(BUDGET, steps=1)(model, x, y, torch.ones(4, 1, 5, 5))
    with pytest.raises(ValueError, match="y"):
        PGD(BUDGET, steps=1)(model, x, y[:, 0])
    with pytest.raises(ValueError, match="allowed: ce"):
        PGD(BUDGET, steps=1, loss="l1")
    with pytest.raises(ValueError, match="allowed: fgsm"):
        get_attack("deepfool", BUDGET)
    with pytest.raises(ValueError, match="eps"):
        get_attack("pgd", Budget.linf(-1.0))
    with pytest.raises(ValueError, match="eps"):
        get_attack("pgd", Budget.linf(float("nan")))
    with pytest.raises(ValueError, match="step_size"):
        PGD(BUDGET, steps=1, step_size=-0.1)


def test_warns_when_steps_cannot_reach_the_boundary() -> None:
    with pytest.warns(UserWarning, match="step_size"):
        PGD(BUDGET, steps=4, step_size=0.01).run(*trained_segmenter())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(BUDGET, steps=4, step_size=0.02).run(*trained_segmenter())


def test_attack_through_sliding_window_uses_the_windowed_gradient(monkeypatch) -> None:
    wrappers = pytest.importorskip("medrobust.models.wrappers")
    model, x, y = trained_segmenter()
    sw = wrappers.SlidingWindow(model, roi_size=(16, 16), overlap=0.5, mode="gaussian")

    class FullGraph(nn.Module):  # the same function, differentiated through the whole graph
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return sw(v)

    calls = []
    original = wrappers.SlidingWindow.loss_and_input_grad
    monkeypatch.setattr(wrappers.SlidingWindow, "loss_and_input_grad",
                        lambda self, v, fn, **kw: calls.append(1) or original(self, v, fn, **kw))
    attack = PGD(Budget.l2(1.0, valid_range=(0.0, 1.0)), steps=3, random_start=False, return_best=False)
    windowed = attack(sw, x, y)
    full = attack(FullGraph(), x, y)
    assert len(calls) == 3
    torch.testing.assert_close(windowed, full, atol=1e-5, rtol=0)
