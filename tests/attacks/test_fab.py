"""FAB / FAB-T: the hyperplane-box projection against a transcription of the reference
(fab_projections.py of github.com/fra31/auto-attack) and robust accuracy against
torchattacks.FAB on a small trained classifier."""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torchattacks
from torch import nn
from torch.nn import functional as F

from medrobust.attacks import FAB, FABT, get_attack
from medrobust.attacks.fab import project_hyperplane
from medrobust.units import Budget


# -- transcription of the reference projections (box [0, 1]) ---------------------------------
def reference_projection_linf(points_to_project, w_hyperplane, b_hyperplane):
    t, w, b = points_to_project, w_hyperplane.clone(), b_hyperplane.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    b.mul_(sign)
    a = (w < 0).float()
    d = (a - t) * (w != 0).float()
    p = a - t * (2 * a - 1)
    indp = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp.flip((1,))
    ws = w.gather(1, indp2)
    bs2 = - ws * d.gather(1, indp2)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(bs2, dim=1) + b0.unsqueeze(1)
    b2 = sb[:, -1] - s[:, -1] * p.gather(1, indp[:, 0].unsqueeze(1)).squeeze(1)
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & (b - b2 <= 0)
    lb = torch.zeros(c2.sum())
    ub = torch.full((c2.sum(),), w.shape[1] - 1, dtype=torch.float)
    nitermax = math.ceil(math.log2(w.shape[1]))
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]
    for _ in range(nitermax):
        counter4 = torch.floor((lb + ub) / 2)
        counter2 = counter4.long().unsqueeze(1)
        indcurr = indp_.gather(1, indp_.size(1) - 1 - counter2)
        b2 = sb_.gather(1, counter2) - s_.gather(1, counter2) * p_.gather(1, indcurr)
        c = b_ - b2.squeeze(1) > 0
        lb = torch.where(c, counter4, lb)
        ub = torch.where(c, ub, counter4)
    lb = lb.long()
    if c_l.any():
        lmbd_opt = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), min=0).unsqueeze(-1)
        d[c_l] = (2 * a[c_l] - 1) * lmbd_opt
    lmbd_opt = torch.clamp_min((b[c2] - sb[c2, lb]) / (-s[c2, lb]), min=0).unsqueeze(-1)
    d[c2] = torch.min(lmbd_opt, d[c2]) * a[c2] + torch.max(-lmbd_opt, d[c2]) * (1 - a[c2])
    return d * (w != 0).float()


def reference_projection_l2(points_to_project, w_hyperplane, b_hyperplane):
    t, w, b = points_to_project, w_hyperplane.clone(), b_hyperplane
    c = (w * t).sum(1) - b
    ind2 = c < 0
    w[ind2] *= -1
    c[ind2] *= -1
    r = torch.max(t / w, (t - 1) / w).clamp(min=-1e12, max=1e12)
    r[w.abs() < 1e-8] = 1e12
    r[r == -1e12] *= -1
    rs, indr = torch.sort(r, dim=1)
    rs2 = F.pad(rs[:, 1:], (0, 1))
    rs[rs == 1e12] = 0
    rs2[rs2 == 1e12] = 0
    w3s = (w ** 2).gather(1, indr)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - torch.cumsum(w3s, dim=1)
    d = -(r * w)
    d.mul_((w.abs() > 1e-8).float())
    s = torch.cat(((-w5.squeeze() * rs[:, 0]).unsqueeze(1),
                   torch.cumsum((-rs2 + rs) * ws, dim=1) - w5 * rs[:, 0].unsqueeze(-1)), 1)
    c4 = s[:, 0] + c < 0
    c3 = (d * w).sum(dim=1) + c > 0
    c2 = ~c4 & ~c3
    lb = torch.zeros(c2.sum())
    ub = torch.full((c2.sum(),), w.shape[1] - 1, dtype=torch.float)
    nitermax = math.ceil(math.log2(w.shape[1]))
    s_, c_ = s[c2], c[c2]
    for _ in range(nitermax):
        counter4 = torch.floor((lb + ub) / 2)
        counter2 = counter4.long().unsqueeze(1)
        c3 = s_.gather(1, counter2).squeeze(1) + c_ > 0
        lb = torch.where(c3, counter4, lb)
        ub = torch.where(c3, ub, counter4)
    lb = lb.long()
    if c4.any():
        alpha = c[c4] / w5[c4].squeeze(-1)
        d[c4] = -alpha.unsqueeze(-1) * w[c4]
    if c2.any():
        alpha = (s[c2, lb] + c[c2]) / ws[c2, lb] + rs[c2, lb]
        alpha[ws[c2, lb] == 0] = 0
        c5 = (alpha.unsqueeze(-1) > r[c2]).float()
        d[c2] = d[c2] * c5 - alpha.unsqueeze(-1) * w[c2] * (1 - c5)
    return d * (w.abs() > 1e-8).float()


REFERENCE = {"linf": reference_projection_linf, "l2": reference_projection_l2}


def hyperplanes(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points in [0, 1], normals with some zero coordinates, offsets that the box can reach
    (from w·corner_low to w·corner_high, both sides of the points)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64) * (torch.rand(n, dim, generator=g) > 0.2)
    lo, hi = w.clamp(max=0).sum(1), w.clamp(min=0).sum(1)
    b = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    return t, w, b


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_the_reference(norm: str) -> None:
    t, w, b = hyperplanes(200, 30, seed=1)
    ours = project_hyperplane(t, w, b, torch.tensor(0.0, dtype=t.dtype), torch.tensor(1.0, dtype=t.dtype), norm)
    theirs = REFERENCE[norm](t.clone(), w.clone(), b.clone())
    torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close((w * (t + ours)).sum(1), b)                    # on the hyperplane
    assert ((t + ours) >= -1e-12).all() and ((t + ours) <= 1 + 1e-12).all()  # inside the box


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_goes_to_the_corner_when_out_of_reach(norm: str) -> None:
    t, w, b = hyperplanes(50, 10, seed=2)
    b = w.clamp(min=0).sum(1) + 1.0                       # above anything the box reaches
    ours = project_hyperplane(t, w, b, torch.tensor(0.0, dtype=t.dtype), torch.tensor(1.0, dtype=t.dtype), norm)
    theirs = REFERENCE[norm](t.clone(), w.clone(), b.clone())
    torch.testing.assert_close(t + ours, t + theirs)
    torch.testing.assert_close(t + ours, torch.where(w > 0, 1.0, torch.where(w < 0, 0.0, t)))


def test_projection_without_a_box_is_the_closed_form() -> None:
    t, w, b = hyperplanes(20, 8, seed=3)
    b = b * 50                                            # far outside [0, 1]: only the unbounded box reaches it
    inf = torch.tensor(math.inf, dtype=t.dtype)
    c = (w * t).sum(1) - b
    l2 = project_hyperplane(t, w, b, -inf, inf, "l2")
    torch.testing.assert_close(l2, -c[:, None] * w / (w * w).sum(1, keepdim=True))
    linf = project_hyperplane(t, w, b, -inf, inf, "linf")
    torch.testing.assert_close(linf, -c[:, None] * w.sign() / w.abs().sum(1, keepdim=True))


# -- against torchattacks.FAB on a trained classifier ----------------------------------------
@functools.lru_cache(maxsize=1)
def blobs_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 4-class MLP on 2D points in [0, 1] (as images (B, 1, 1, 2)), trained here; the
    first 40 held-out points and their labels."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.3, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.7]])
    labels = torch.randint(0, 4, (440,), generator=g)
    points = (centres[labels] + 0.09 * torch.randn(440, 2, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = points[:400, None, None]
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), labels[:400]).backward()
        opt.step()
    return model.eval(), points[400:, None, None], labels[400:]


def robust_count(model: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float,
                 norm: str) -> int:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


@pytest.mark.parametrize("norm,eps", [("linf", 0.08), ("l2", 0.12)])
@pytest.mark.parametrize("targeted", [False, True])
def test_fab_robust_accuracy_at_most_torchattacks(norm: str, eps: float, targeted: bool) -> None:
    model, x, y = blobs_classifier()
    budget = Budget.linf(eps, valid_range=(0.0, 1.0)) if norm == "linf" else Budget.l2(eps, valid_range=(0.0, 1.0))
    ours = (FABT(budget, steps=20) if targeted else FAB(budget, steps=20)).run(model, x, y)
    theirs = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=20, n_classes=4,
                              multi_targeted=targeted, seed=0)(x, y)
    clean = int((model(x).argmax(1) == y).sum())
    n_ours, n_theirs = robust_count(model, ours.x_adv, x, y, eps, norm), robust_count(model, theirs, x, y, eps, norm)
    print(f"FAB{'-T' if targeted else ''} {norm}: clean {clean}, ours {n_ours}, torchattacks {n_theirs} of {len(y)}")
    assert n_ours <= n_theirs + 1
    assert n_ours < clean                                   # it does fool some
    assert int((ours.metric == 1).sum()) == n_ours         # the reported outcome is the returned image's


def test_fab_reports_the_smallest_norm_and_its_names() -> None:
    model, x, y = blobs_classifier()
    budget = Budget.l2(10.0, valid_range=(0.0, 1.0))      # large: everything is fooled
    result = FAB(budget, steps=20).run(model, x, y)
    size = (result.x_adv - x).flatten(1).norm(dim=1)
    fooled = result.metric == 0
    assert fooled.float().mean() > 0.9
    torch.testing.assert_close(size[fooled], result.extra["norm"][fooled])
    assert type(get_attack("fab", budget, steps=3)) is FAB
    fab_t = get_attack("fab-t", budget, steps=3, n_targets=2)
    assert type(fab_t) is FABT and fab_t.n_targets == 2
    with pytest.raises(ValueError, match="classifiers"):
        FAB(budget, steps=2).run(nn.Conv2d(1, 3, 1), torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_keeps_the_mask_and_an_unbounded_range(norm: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.randn(5, 1, 8, 8)                           # z-scored: no valid range
    with torch.no_grad():
        y = model(x).argmax(1)
    mask = torch.zeros(5, 1, 8, 8)
    mask[..., :4] = 1
    budget = Budget.linf(5.0) if norm == "linf" else Budget.l2(50.0)
    result = FAB(budget, steps=10, restarts=2, seed=0).run(model, x, y, mask)
    assert result.loss_history.shape == (22, 5)
    assert torch.equal(result.x_adv[..., 4:], x[..., 4:])  # nothing outside the mask
    assert (result.metric == 0).all()                     # a linear model: the first step crosses
    delta = (result.x_adv - x).flatten(1)
    torch.testing.assert_close(delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1), result.extra["norm"])
