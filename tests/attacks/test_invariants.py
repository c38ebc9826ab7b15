"""design.md section 4: the invariants every attack keeps, over random shapes, units, norms,
masks, per-sample budgets and dtypes (hypothesis)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from medrobust.attacks import get_attack
from medrobust.units import Budget, IntensityMap

ATTACKS = ["fgsm", "bim", "pgd", "mifgsm", "apgd", "square", "gaussian"]
K = 3


def tiny_model(dims: int, channels: int, task: str, dtype: torch.dtype) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    if task == "classification":
        model = nn.Sequential(conv(channels, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), pool, nn.Flatten(),
                              nn.Linear(4, K))
    else:
        model = nn.Sequential(conv(channels, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), conv(4, K, 1))
    return model.to(dtype)


@st.composite
def scenarios(draw):
    dims = draw(st.sampled_from([2, 3]))
    return {
        "dims": dims,
        "spatial": tuple(draw(st.integers(3, 6)) for _ in range(dims)),
        "batch": draw(st.integers(1, 3)),
        "channels": draw(st.integers(1, 2)),
        "task": draw(st.sampled_from(["classification", "segmentation"])),
        "norm": draw(st.sampled_from(["linf", "l2"])),
        "unit": draw(st.sampled_from(["model", "1/255", "HU", "raw"])),
        "per_sample": draw(st.booleans()),
        "mask": draw(st.booleans()),
        "targeted": draw(st.booleans()),
        "restarts": draw(st.integers(1, 2)),
        "early_stop": draw(st.booleans()),
        "return_best": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }


def build(s):
    g = torch.Generator().manual_seed(s["seed"])
    B, shape = s["batch"], (s["batch"], s["channels"], *s["spatial"])
    eps = {"model": 0.05, "1/255": 4.0, "HU": 10.0, "raw": 20.0}[s["unit"]]
    if s["per_sample"]:
        eps = eps * (0.5 + torch.rand(B, generator=g, dtype=torch.float64))
    if s["unit"] == "raw":  # per-sample z-scored MRI: no clip, per-sample scale
        imap = IntensityMap.z_score(100 + 50 * torch.rand(B, generator=g, dtype=torch.float64),
                                    40 + 40 * torch.rand(B, generator=g, dtype=torch.float64))
        x = torch.randn(shape, generator=g).to(s["dtype"])
        rng = None
    else:
        imap = IntensityMap.ct_window(-175, 250) if s["unit"] == "HU" else None
        x = torch.rand(shape, generator=g).to(s["dtype"])
        rng = (0.0, 1.0)
    make = Budget.linf if s["norm"] == "linf" else Budget.l2
    budget = make(eps, unit=s["unit"], valid_range=rng, intensity=imap)
    if s["task"] == "classification":
        y = torch.randint(0, K, (B,), generator=g)
    else:
        y = torch.randint(0, K, (B, 1, *s["spatial"]), generator=g)
    mask = (torch.rand(B, 1, *s["spatial"], generator=g) > 0.4) if s["mask"] else None
    return budget, x, y, mask


@pytest.mark.parametrize("name", ATTACKS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=scenarios())
def test_attack_keeps_invariants(name: str, s) -> None:
    budget, x, y, mask = build(s)
    model = tiny_model(s["dims"], s["channels"], s["task"], s["dtype"]).train()
    params = list(model.parameters())
    params[0].requires_grad_(False)  # a mixed state that must come back as it was
    flags = [p.requires_grad for p in params]
    options = {"steps": 2, "restarts": s["restarts"], "targeted": s["targeted"], "seed": s["seed"]}
    if s["early_stop"] and name != "gaussian":
        options["early_stop"] = True if s["task"] == "classification" else 0.5
    if not s["return_best"] and name != "gaussian":  # noise has a single draw to return
        options["return_best"] = False
    if name == "square" and s["norm"] == "l2":
        with pytest.raises(ValueError, match="budget"):
            get_attack(name, budget, **options)
        return
    x_before = x.clone()
    result = get_attack(name, budget, **options).run(model, x, y, mask)
    x_adv = result.x_adv

    assert torch.equal(x, x_before), "x was modified"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and torch.isfinite(x_adv).all()
    lo, hi = budget.range_for(x)
    assert (x_adv >= lo).all() and (x_adv <= hi).all(), "outside the valid range"
    if mask is not None:
        outside = (mask == 0).expand_as(x)
        assert torch.equal(x_adv[outside], x[outside]), "changed outside the mask"
    if name != "gaussian":  # noise is not norm-bounded (attacks/noise.py)
        assert (budget.norm_of(x_adv - x) <= budget.eps_for(x) + 1e-6).all(), "outside the eps ball"
    assert result.best_loss.shape == (x.shape[0],) and result.loss_history.shape[1] == x.shape[0]
    assert all(m.training for m in model.modules()), "training flag not restored"
    assert [p.requires_grad for p in params] == flags, "requires_grad not restored"
    assert all(p.grad is None for p in params), "gradient left on a parameter"


def test_gaussian_noise_std_is_in_the_budget_unit_and_norms_are_recorded() -> None:
    imap = IntensityMap.ct_window(-175, 250)  # 425 HU per model unit
    budget = Budget.linf(8, unit="HU", valid_range=(-10.0, 10.0), intensity=imap)
    x = torch.zeros(2, 1, 32, 32, 32)
    model = tiny_model(3, 1, "segmentation", torch.float32)
    y = torch.zeros(2, 1, 32, 32, 32, dtype=torch.long)
    result = get_attack("gaussian", budget, std=20, seed=0, steps=5, restarts=3).run(model, x, y)
    noise_hu = (result.x_adv - x) * 425
    assert abs(float(noise_hu.std()) - 20) < 0.5
    torch.testing.assert_close(result.extra["linf_model"], (result.x_adv - x).flatten(1).abs().amax(1))
    torch.testing.assert_close(result.extra["l2_model"], (result.x_adv - x).flatten(1).norm(dim=1))
    default = get_attack("gaussian", budget, seed=0).run(model, x, y)  # std defaults to eps (8 HU)
    assert abs(float((default.x_adv - x).std()) * 425 - 8) < 0.3


def test_registry_translates_generic_options() -> None:
    budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
    assert get_attack("square", budget, steps=7, restarts=2).steps == 7
    assert get_attack("FGSM", budget, steps=20, step_size=3).steps == 1
    assert get_attack("apgd-dlr", budget, steps=5).loss_name == "dlr"
    with pytest.raises(ValueError, match="pgd"):
        get_attack("pgd", budget, n_queries=5)
