"""PAdam-CE / PAdam-Cos (Halmosi, Mohos & Jelasity 2024) against a transcription of the published update.

The authors' code (https://github.com/szegedai/Robust-Segmentation-Evaluation, rse/attacks.py
``padam`` with rse/__init__.py ``build_attacks``) runs ``torch.optim.Adam(lr=2/255,
amsgrad=True, maximize=True)`` on the perturbation, clipping it to the L-inf ball and the
valid range after every step, for 200 steps; its losses are the per-pixel cross-entropy and
``1 - cosine_similarity(logits, one_hot(y))``, averaged.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import get_attack
from medrobust.attacks.base import AttackState
from medrobust.attacks.outcome import sample_metric
from medrobust.attacks.padam import PAdam
from medrobust.attacks.registry import attack_norms, attack_task
from medrobust.losses import cosine_distance
from medrobust.units import Budget
from tests.attacks.test_gradient import trained_segmenter

LossMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels (B, *spatial)) -> per pixel
EPS = 8 / 255
BUDGET = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))


def published_padam(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossMap, eps: float,
                    step_size: float, num_steps: int, start: torch.Tensor) -> torch.Tensor:
    """Transcription of the published loop (one sample, or a batch averaged as published)."""
    delta = (start - x).clone()
    adam = torch.optim.Adam([delta], lr=step_size, amsgrad=True, maximize=True)
    for _ in range(num_steps):
        with torch.enable_grad():
            delta.requires_grad_(True)
            loss = loss_fn(model(x + delta), y).mean()
            delta.grad = torch.autograd.grad(loss, delta)[0]
            adam.step()
        with torch.no_grad():
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def published_cos(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(z, F.one_hot(y, z.shape[1]).movedim(-1, 1).float())


def published_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(z, y, reduction="none")


def test_two_steps_on_a_fixed_gradient_match_amsgrad_by_hand_and_torch_adam() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 6, 6, generator=g) * 0.5 + 0.25
    grads = [torch.randn(1, 1, 6, 6, generator=g) * 10 ** torch.randint(-4, 2, (1, 1, 6, 6), generator=g)
             for _ in range(2)]
    attack = PAdam(BUDGET, random_start=False)
    state = AttackState.create(BUDGET, x, torch.tensor([0.0]), None, None)
    attack.init_state(x, state)
    ours = []
    for t, grad in enumerate(grads, 1):
        attack.update(x, state, grad, torch.zeros(1), t)
        attack.project(x, state)
        ours.append(state.var.clone())

    # by hand: m, v, v_max, bias corrections, lr = 2/255 (= eps / 4)
    b1, b2, lr = 0.9, 0.999, 2 / 255
    delta, m, v, v_max = torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)
    # torch.optim.Adam as the published code calls it, on the same gradients
    d_torch = torch.zeros_like(x, requires_grad=True)
    adam = torch.optim.Adam([d_torch], lr=lr, amsgrad=True, maximize=True)
    for t, grad in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        v_max = torch.maximum(v_max, v)
        delta = delta + lr / (1 - b1 ** t) * m / (v_max.sqrt() / math.sqrt(1 - b2 ** t) + 1e-8)
        delta = ((x + delta.clamp(-EPS, EPS)).clamp(0, 1)) - x
        d_torch.grad = grad
        adam.step()
        with torch.no_grad():
            d_torch.clamp_(-EPS, EPS)
            d_torch.copy_((x + d_torch).clamp(0, 1) - x)
        torch.testing.assert_close(ours[t - 1], x + delta, rtol=0, atol=1e-7)
        torch.testing.assert_close(ours[t - 1], x + d_torch.detach(), rtol=0, atol=1e-7)
    assert (ours[1] - x).abs().max() > 3 / 255  # it moved: two steps of about 2/255


@pytest.mark.parametrize(("name", "loss"), [("padam-ce", published_ce), ("padam-cos", published_cos)])
def test_run_matches_the_published_loop_on_a_trained_segmenter(name: str, loss: LossMap) -> None:
    model, x, y = trained_segmenter()
    ours = get_attack(name, BUDGET, steps=5, random_start=False, return_best=False).run(model, x, y).x_adv
    # published: loss averaged over the batch; here per sample, so run it one sample at a time
    ref = torch.cat([published_padam(model, x[i:i + 1], y[i:i + 1, 0], loss, EPS, 2 / 255, 5, x[i:i + 1])
                     for i in range(x.shape[0])])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert (ours - x).abs().max() > 4 / 255


@pytest.mark.parametrize("name", ["padam-ce", "padam-cos"])
def test_padam_raises_the_loss_and_lowers_dice(name: str) -> None:
    model, x, y = trained_segmenter()
    with torch.no_grad():
        clean_dice = sample_metric(model(x), y)
    budget = Budget.linf(0.08, valid_range=(0.0, 1.0))  # the budget of test_gradient's strength tests
    result = get_attack(name, budget, steps=20, seed=0).run(model, x, y)
    assert result.metric is not None
    assert float(result.metric.mean()) < float(clean_dice.mean()) - 0.15
    assert (result.best_loss > result.loss_history[0]).all()   # above the random start's loss
    assert (result.x_adv - x).abs().max() <= 0.08 + 1e-6


def test_l2_learning_rate_ball_and_mask() -> None:
    model, x, y = trained_segmenter()
    mask = torch.zeros_like(x)
    mask[..., 5:15, 5:15] = 1
    budget = Budget.l2(1.0, valid_range=(0.0, 1.0))
    attack = PAdam(budget, steps=10, seed=0)
    state = AttackState.create(budget, x, torch.zeros(4), mask, None)
    attack.init_state(x, state)
    torch.testing.assert_close(state.aux["lr"].flatten(), torch.full((4,), 0.25 / 10.0))  # eps / (4 sqrt(100))
    x_adv = attack(model, x, y, mask)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()
    assert ((x_adv - x) * (1 - mask)).abs().max() == 0
    with torch.no_grad():
        assert sample_metric(model(x_adv), y).mean() < sample_metric(model(x), y).mean()


def test_cosine_distance_is_the_published_loss_and_respects_ignore_mask() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 1, 4, 4), generator=g)
    expected = published_cos(z, y[:, 0]).flatten(1).mean(1)
    torch.testing.assert_close(cosine_distance(z, y), expected)
    ignore = torch.zeros(2, 1, 4, 4)
    ignore[:, :, :2] = 1
    torch.testing.assert_close(cosine_distance(z, y, ignore_mask=ignore), cosine_distance(z[:, :, 2:], y[:, :, 2:]))
    with pytest.raises(ValueError, match="ignore_mask"):
        cosine_distance(z, y, ignore_mask=torch.zeros(2, 4, 4))


def test_registry_entries_and_bad_options() -> None:
    for name in ("padam-ce", "padam-cos"):
        assert attack_norms(name) == ("linf", "l2") and attack_task(name) is None
        attack = get_attack(name, BUDGET)
        assert isinstance(attack, PAdam) and attack.steps == 200 and attack.random_start
    assert get_attack("padam-cos", BUDGET).loss_fn is cosine_distance
    with pytest.raises(ValueError, match="loss"):
        get_attack("padam-ce", BUDGET, loss="dlr")
    with pytest.raises(ValueError, match="betas"):
        PAdam(BUDGET, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="adam_eps"):
        PAdam(BUDGET, adam_eps=0.0)
