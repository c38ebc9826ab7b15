"""APGD: checkpoints and step-size rule of Croce & Hein (2020), and strength against PGD."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torchattacks
from torch import nn

from medrobust.attacks import APGD, APGDT, PGD, get_attack
from medrobust.attacks.apgd import apgd_checkpoints
from medrobust.attacks.apgd_targeted import dlr_targeted
from medrobust.attacks.outcome import sample_metric
from medrobust.units import Budget
from tests.attacks.test_fab import blobs_classifier, robust_count
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


# -- APGD-T --------------------------------------------------------------------------------
def reference_apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor, eps: float,
                     n_iter: int, norm: str, rho: float = 0.75) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The iterates of ``APGDAttack.attack_single_run`` with loss 'dlr-targeted' (github.com/fra31/
    auto-attack, autopgd_base.py), transcribed for one restart from ``x_init = x`` (no random
    start), box [0, 1]. One documented change: at the first checkpoint the oscillation count
    compares the first iterate's loss with the start point's (the reference reads the unset
    ``loss_steps[-1] = 0`` there; medrobust's APGD docstring names this difference).
    Returns the iterates and the losses ``(n_iter + 1, B)`` of the start point and the iterates."""
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    u = torch.arange(x.shape[0])

    def dlr_loss_targeted(logits: torch.Tensor) -> torch.Tensor:
        x_sorted = logits.sort(dim=1)[0]
        return -(logits[u, y] - logits[u, y_target]) / (x_sorted[:, -1] - .5 * (x_sorted[:, -3] + x_sorted[:, -4]) + 1e-12)

    def normalize(v: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            t = v.abs().reshape(v.shape[0], -1).max(1)[0]
        else:
            t = (v ** 2).reshape(v.shape[0], -1).sum(-1).sqrt()
        return v / (t.view(-1, 1, 1, 1) + 1e-12)

    def lp_norm(v: torch.Tensor) -> torch.Tensor:
        return (v ** 2).reshape(v.shape[0], -1).sum(-1).sqrt().view(-1, 1, 1, 1)

    def project(x_adv_1: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return torch.clamp(torch.min(torch.max(x_adv_1, x - eps), x + eps), 0.0, 1.0)
        return torch.clamp(x + normalize(x_adv_1 - x) * torch.min(eps * torch.ones_like(x), lp_norm(x_adv_1 - x)), 0.0, 1.0)

    def loss_and_grad(x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = x_adv.clone().requires_grad_()
        loss_indiv = dlr_loss_targeted(model(x_adv))
        return loss_indiv.detach(), torch.autograd.grad(loss_indiv.sum(), [x_adv])[0].detach()

    x_adv = x.clone().clamp(0.0, 1.0)
    x_best = x_adv.clone()
    loss_steps = torch.zeros([n_iter, x.shape[0]], dtype=x.dtype)
    loss_indiv, grad = loss_and_grad(x_adv)
    grad_best, loss_best, loss_start = grad.clone(), loss_indiv.clone(), loss_indiv.clone()
    step_size = 2.0 * eps * torch.ones([x.shape[0], 1, 1, 1], dtype=x.dtype)
    x_adv_old = x_adv.clone()
    counter3, k = 0, n_iter_2
    loss_best_last_check, reduced_last_check = loss_best.clone(), torch.ones_like(loss_best)
    iterates = []
    for i in range(n_iter):
        grad2 = x_adv - x_adv_old
        x_adv_old = x_adv.clone()
        a = 0.75 if i > 0 else 1.0
        direction = torch.sign(grad) if norm == "linf" else normalize(grad)
        x_adv_1 = project(x_adv + step_size * direction)
        x_adv = project(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a))
        iterates.append(x_adv.clone())
        y1, grad = loss_and_grad(x_adv)
        loss_steps[i] = y1
        ind = y1 > loss_best
        x_best[ind], grad_best[ind], loss_best[ind] = x_adv[ind].clone(), grad[ind].clone(), y1[ind]
        counter3 += 1
        if counter3 == k:
            steps = torch.cat((loss_start[None], loss_steps))          # steps[j + 1] = loss_steps[j]
            t = sum((steps[i + 1 - c] > steps[i - c]).float() for c in range(k))
            fl_oscillation = (t <= k * rho).float()
            fl_reduce_no_impr = (1. - reduced_last_check) * (loss_best_last_check >= loss_best).float()
            fl_oscillation = torch.max(fl_oscillation, fl_reduce_no_impr)
            reduced_last_check, loss_best_last_check = fl_oscillation.clone(), loss_best.clone()
            ind_fl_osc = fl_oscillation > 0
            step_size[ind_fl_osc] /= 2.0
            x_adv[ind_fl_osc] = x_best[ind_fl_osc].clone()
            grad[ind_fl_osc] = grad_best[ind_fl_osc].clone()
            k = max(k - size_decr, n_iter_min)
            counter3 = 0
    return iterates, torch.cat((loss_start[None], loss_steps))


class RecordingAPGDT(APGDT):
    """APGD-T that records every projected iterate."""

    def project(self, x, state):
        super().project(x, state)
        self.iterates.append(state.var.detach().clone())


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 0.05)])
def test_apgd_t_iterates_follow_the_published_update(norm: str, eps: float) -> None:
    model, x, y = blobs_classifier()
    model, x = copy.deepcopy(model).double(), x.double()  # float64: no rounding ties between the two codes
    budget = Budget.linf(eps, valid_range=(0.0, 1.0)) if norm == "linf" else Budget.l2(eps, valid_range=(0.0, 1.0))
    with torch.no_grad():
        logits = model(x)
    keep = logits.argmax(1) == y                          # one target run sees exactly these samples
    x, y, target = x[keep], y[keep], logits[keep].sort(dim=1)[1][:, -2]
    attack = RecordingAPGDT(budget, steps=30, n_targets=1, random_start=False)
    attack.iterates = []
    attack.run(model, x, y)
    theirs, losses = reference_apgd_t(model, x, y, target, eps, 30, norm)
    assert len(attack.iterates) == len(theirs) == 30
    # L2: the reference's projection divides by |delta| + 1e-12 (ours clamps |delta| >= 1e-12),
    # a 1e-11 relative difference; once a sample's loss moves by < 1e-9 per step this rounding
    # can flip the oscillation count, so an L2 sample is compared until its loss settles.
    settled = torch.full((len(y),), 30)
    if norm == "l2":
        still = (losses[1:] - losses[:-1]).abs() < 1e-9                   # (steps, B)
        settled = torch.where(still.any(0), still.float().argmax(0), settled)
        assert (settled > 6).all() and (settled == 30).any()          # past the first checkpoint
    for step, (a, b) in enumerate(zip(attack.iterates, theirs)):
        rows = step < settled
        torch.testing.assert_close(a[rows], b[rows], atol=1e-9, rtol=0, msg=lambda m, s=step: f"step {s + 1}: {m}")


def test_apgd_t_second_target_runs_only_on_the_samples_still_robust() -> None:
    model, x, y = blobs_classifier()
    attack = RecordingAPGDT(Budget.linf(0.05, valid_range=(0.0, 1.0)), steps=10, n_targets=3, random_start=False)
    attack.iterates = []
    result = attack.run(model, x, y)
    sizes = [len(v) for v in attack.iterates]
    assert len(sizes) == 30 and sizes[0] == int((model(x).argmax(1) == y).sum()) and sizes[10] < sizes[0]
    history = result.loss_history
    assert history.shape == (33, len(y)) and int(history[11].isfinite().sum()) == sizes[10]
    with torch.no_grad():
        assert torch.equal(result.metric, (model(result.x_adv).argmax(1) == y).float())


@pytest.mark.parametrize("norm,eps", [("linf", 0.08), ("l2", 0.12)])
def test_apgd_t_robust_accuracy_at_most_torchattacks(norm: str, eps: float) -> None:
    model, x, y = blobs_classifier()
    budget = Budget.linf(eps, valid_range=(0.0, 1.0)) if norm == "linf" else Budget.l2(eps, valid_range=(0.0, 1.0))
    ours = get_attack("apgd-t", budget, steps=20, seed=0)(model, x, y)
    theirs = torchattacks.APGDT(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=20, n_classes=4,
                                seed=0)(x, y)
    n_ours, n_theirs = robust_count(model, ours, x, y, eps, norm), robust_count(model, theirs, x, y, eps, norm)
    print(f"APGD-T {norm}: ours {n_ours}, torchattacks {n_theirs} of {len(y)}")
    assert n_ours <= n_theirs + 1 and n_ours < len(y)


def test_apgd_t_rejects_loss_targeted_and_segmentation() -> None:
    for key in ("loss", "targeted"):
        with pytest.raises(ValueError, match=key):
            APGDT(BUDGET, **{key: "dlr" if key == "loss" else True})
    with pytest.raises(ValueError, match="classifiers"):
        APGDT(BUDGET, steps=2).run(nn.Conv2d(1, 3, 1), torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_targeted_dlr_is_the_published_formula() -> None:
    logits = torch.randn(6, 7, dtype=torch.float64)
    y, target = torch.arange(6) % 7, (torch.arange(6) + 3) % 7
    s = logits.sort(1)[0]
    u = torch.arange(6)
    want = -(logits[u, y] - logits[u, target]) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)
    torch.testing.assert_close(dlr_targeted(logits, y, target), want)
