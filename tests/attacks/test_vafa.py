"""VAFA (attacks/frequency/) and its SSIM (attacks/ssim.py) on tiny volumes."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust import metrics
from medrobust.attacks import attack_names, get_attack
from medrobust.attacks.frequency import VAFA, surrogate_round
from medrobust.attacks.ssim import SSIMReference, ssim
from medrobust.losses import get_loss
from medrobust.units import Budget, IntensityMap


def phantoms(n: int, seed: int = 0, size: int = 16, noise: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipsoids (label 1, intensity 0.55) in background 0.3, plus noise, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.linspace(-1, 1, size)
    zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
    c = (torch.rand(n, 3, 1, 1, 1, generator=gen) - 0.5) * 0.5
    r = 0.45 + 0.35 * torch.rand(n, 3, 1, 1, 1, generator=gen)
    d = ((zz - c[:, 0]) / r[:, 0]) ** 2 + ((yy - c[:, 1]) / r[:, 1]) ** 2 + ((xx - c[:, 2]) / r[:, 2]) ** 2
    lab = (d < 1).long()[:, None]
    img = 0.3 + 0.25 * lab + noise * torch.randn(lab.shape, generator=gen)
    return img.clamp(0, 1), lab


def tiny_net(spatial_dims: int = 3) -> nn.Module:
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 2, 3, padding=1))


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    net = tiny_net()
    x, y = phantoms(4)
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    ce, dice = get_loss("ce"), get_loss("dice")
    for _ in range(25):
        out = net(x)
        loss = (ce(out, y) + dice(out, y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


# -- the frequency budget -------------------------------------------------------------------
def test_q_stays_in_bounds_and_image_in_range() -> None:
    x, y = phantoms(2)
    res = VAFA(q_max=6, q_min=2, q_init=3, steps=4, block_size=(8, 8, 8), step_size=3).run(tiny_net(), x, y)
    assert (res.extra["q_smallest"] >= 2).all() and (res.extra["q_largest"] <= 6).all()
    assert (res.extra["q_largest"] > res.extra["q_smallest"]).all()  # the steps moved q
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.loss_history.shape == (5, 2)


@pytest.mark.parametrize("valid_range", [(0.0, 1.0), (-3.0, 5.0)])
def test_q_fixed_at_one_is_eight_bit_precision(valid_range: tuple[float, float]) -> None:
    lo, hi = valid_range
    x, y = phantoms(1)
    x = lo + x * (hi - lo)
    res = VAFA(q_max=1, steps=2, block_size=(8, 8, 8), valid_range=valid_range).run(tiny_net(), x, y)
    bound = (hi - lo) / 255 / 2 * math.sqrt(8 ** 3)  # |IDCT(e)| <= sqrt(N) max|e|
    assert 0 < (res.x_adv - x).abs().max() <= bound
    assert res.extra["linf_model"].item() == pytest.approx((res.x_adv - x).abs().max().item(), rel=1e-5)
    assert res.extra["ssim"].item() > 0.999
    assert res.extra["psnr"].item() > 45
    assert (res.extra["q_mean"] == 1).all()


def test_raw_unit_norms_through_intensity_map() -> None:
    x, y = phantoms(1)
    imap = IntensityMap.ct_window(-175, 250)
    res = VAFA(q_max=20, q_init=20, steps=1, block_size=(8, 8, 8), intensity=imap).run(tiny_net(), x, y)
    assert res.extra["linf_raw"].item() == pytest.approx(425 * res.extra["linf_model"].item(), rel=1e-5)
    assert res.extra["l2_raw"].item() == pytest.approx(425 * res.extra["l2_model"].item(), rel=1e-5)


@pytest.mark.slow
def test_vafa_raises_the_dice_loss_of_a_trained_model(trained: nn.Module) -> None:
    x, y = phantoms(2, seed=1)
    dice = get_loss("dice")
    with torch.no_grad():
        clean = dice(trained(x), y)
    res = VAFA(steps=10, block_size=(8, 8, 8), rounding="tanh", q_min=5, step_size=1.0).run(trained, x, y)
    with torch.no_grad():
        adv = dice(trained(res.x_adv), y)
    assert (adv > clean + 1e-3).all(), (clean, adv)
    history = res.loss_history[:, 0]
    assert history[-1] > history[0] + 1e-3  # the signed steps on q raised the objective
    # best_loss is the objective of the returned image: Dice loss - (1 - SSIM)
    assert torch.allclose(res.best_loss, adv - (1 - res.extra["ssim"]), atol=1e-4)
    assert (res.extra["ssim"] > 0.9).all()
    # the default (q from 1) never returns an image worse for the attacker than its start
    default = VAFA(steps=4, block_size=(8, 8, 8)).run(trained, x, y)
    assert (default.best_loss >= default.loss_history[0] - 1e-6).all()


def test_loop_contract_flags_x_and_param_grads() -> None:
    net = tiny_net()
    net.train()
    net[0].weight.requires_grad_(False)
    x, y = phantoms(1)
    x0 = x.clone()
    VAFA(steps=2, block_size=(8, 8, 8))(net, x, y)
    assert net.training and all(m.training for m in net.modules())
    assert not net[0].weight.requires_grad and net[0].bias.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(x, x0)


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_constant_volume_gives_no_nan(value: float) -> None:
    x = torch.full((1, 1, 16, 16, 16), value)
    y = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    for attack in (VAFA(steps=1, block_size=(8, 8, 8)), VAFA(steps=1, block_size=(8, 8))):
        res = attack.run(tiny_net(), x, y)
        assert torch.isfinite(res.x_adv).all() and torch.isfinite(res.best_loss).all()
        assert torch.isfinite(res.extra["ssim"]).all() and not torch.isnan(res.extra["psnr"]).any()


def test_vafa2d_blocks_per_slice_and_odd_sizes() -> None:
    x, y = phantoms(1)
    x, y = x[..., :13], y[..., :13]  # 16 x 16 x 13: padding on one axis
    attack = VAFA(steps=2, block_size=(8, 8), q_init=10, q_max=10)
    assert attack.blocks_for(x) == (8, 8, 1)
    assert VAFA(block_size=(8, 8), slice_axis=0).blocks_for(x) == (1, 8, 8)
    res = attack.run(tiny_net(), x, y)
    assert res.x_adv.shape == x.shape and 0 < (res.x_adv - x).abs().max() < 0.2
    # 2D images with 2D blocks
    x2, y2 = x[:, :, :, :, 0], y[:, :, :, :, 0]
    res2 = VAFA(steps=2, block_size=(8, 8), q_init=10, q_max=10).run(tiny_net(2), x2, y2)
    assert res2.x_adv.shape == x2.shape and torch.isfinite(res2.extra["ssim"]).all()


def test_surrogate_roundings_are_hard_in_value() -> None:
    u = torch.tensor([-1.7, -0.2, 0.3, 0.49, 2.6], requires_grad=True)
    expected = {"ste": torch.ones(5), "cubic": 3 * (u.detach() - torch.round(u.detach())) ** 2}
    for rounding in ("ste", "cubic", "tanh"):
        out = surrogate_round(u, rounding, t=1, steps=10)
        assert torch.equal(out.detach(), torch.round(u.detach()))
        (g,) = torch.autograd.grad(out.sum(), u)
        assert torch.isfinite(g).all() and (g >= 0).all()
        if rounding in expected:
            assert torch.allclose(g, expected[rounding])
    # the tanh surrogate sharpens over the steps: steeper at a half-integer late than early
    half = torch.tensor([0.49], requires_grad=True)
    early = torch.autograd.grad(surrogate_round(half, "tanh", 1, 10).sum(), half)[0]
    late = torch.autograd.grad(surrogate_round(half, "tanh", 10, 10).sum(), half)[0]
    assert late > early


def test_published_preset() -> None:
    a = VAFA.published(q_max=20)
    assert (a.rounding, a.q_min, a.q_init, a.q_step, a.ssim_weight) == ("tanh", 5.0, 20.0, 1.0, 1.0)
    assert VAFA.published(q_max=3).q_min == 3.0
    assert VAFA(q_max=20, steps=20).q_step == pytest.approx(1.9)  # 2 (q_max - q_min) / steps


@pytest.mark.parametrize("kwargs, match", [
    ({"q_max": 0.5}, "q_max"),
    ({"q_min": 25.0}, "q_min"),
    ({"q_min": 0.5}, "q_min"),
    ({"q_init": 30.0}, "q_init"),
    ({"block_size": (0, 8, 8)}, "block_size"),
    ({"block_size": (8,)}, "block_size"),
    ({"ssim_weight": -1.0}, "ssim_weight"),
    ({"step_size": -1.0}, "step_size"),
    ({"rounding": "floor"}, "rounding"),
    ({"valid_range": (1.0, 0.0)}, "valid_range"),
    ({"slice_axis": 3}, "slice_axis"),
    ({"steps": 0}, "steps"),
])
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VAFA(**kwargs)


def test_bad_inputs_for_the_data() -> None:
    x, y = phantoms(1)
    with pytest.raises(ValueError, match="block_size"):  # larger than the volume
        VAFA(block_size=(32, 32, 32)).run(tiny_net(), x, y)
    with pytest.raises(ValueError, match="block_size"):  # 3D block on 2D images
        VAFA(block_size=(8, 8, 8)).run(tiny_net(2), x[..., 0], y[..., 0])
    with pytest.raises(ValueError, match="valid_range"):
        VAFA(block_size=(8, 8, 8)).run(tiny_net(), x * 4 - 1, y)


def test_registry_names_and_budget() -> None:
    assert {"vafa3d", "vafa2d"} <= set(attack_names())
    imap = IntensityMap.ct_window(-175, 250)
    budget = Budget.linf(4, unit="1/255", valid_range=(0.0, 1.0), intensity=imap)
    a3 = get_attack("vafa3d", budget, steps=3, block_size=(8, 8, 8))
    assert isinstance(a3, VAFA) and a3.valid_range == (0.0, 1.0) and a3.intensity is imap
    assert get_attack("vafa2d", budget).block_size == (32, 32)
    with pytest.raises(ValueError, match="block_size"):
        get_attack("vafa3d", budget, block_size=(8, 8))
    with pytest.raises(ValueError, match="block_size"):
        get_attack("vafa2d", budget, block_size=(8, 8, 8))
    with pytest.raises(ValueError, match="valid_range"):
        get_attack("vafa3d", Budget.linf(0.1))


def test_windowed_gradient_equals_full_graph() -> None:
    from medrobust.models.wrappers import SlidingWindow

    x, y = phantoms(1)
    sw = SlidingWindow(tiny_net(), roi_size=(16, 16, 8), overlap=0.25).eval()
    attack = VAFA(steps=1, block_size=(8, 8, 8), q_init=5, q_max=10)
    grads = []
    for windowed in (True, False):
        state = _state(attack, x)
        _, score, grad, _ = attack._gain_and_grad(sw, x, y, state, 1, windowed)
        grads.append((score, grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-4)
    assert grads[0][1].abs().sum() > 0


def _state(attack: VAFA, x: torch.Tensor):  # type: ignore[no-untyped-def]
    from medrobust.attacks.base import AttackState

    budget = attack.budget
    state = AttackState.create(budget, x, budget.eps_for(x), None, None)
    attack.init_state(x, state)
    return state


@pytest.mark.parametrize("shape", [(2, 1, 16, 16, 16), (2, 3, 20, 24), (1, 1, 12, 9, 14)])
def test_ssim_equals_monai(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape)
    y = (x + 0.1 * torch.randn(shape)).clamp(0, 1)
    ours = ssim(x, y, 1.0)
    assert torch.allclose(ours, metrics.ssim(x, y, 1.0), atol=1e-5)
    assert torch.allclose(ssim(x, x, 1.0), torch.ones(shape[0]), atol=1e-6)
    ref = SSIMReference(x, torch.tensor([1.0] * shape[0]))
    yy = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref(yy).sum(), yy)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_inputs_device() -> None:
    x, y = phantoms(1)
    dev = torch.device("cuda")
    net = tiny_net()
    cpu = VAFA(q_max=1, steps=1, block_size=(8, 8, 8)).run(net, x, y)
    gpu = VAFA(q_max=1, steps=1, block_size=(8, 8, 8)).run(net.to(dev), x.to(dev), y.to(dev))
    assert gpu.x_adv.device.type == "cuda" and all(v.device.type == "cuda" for v in gpu.extra.values())
    assert (gpu.x_adv.cpu() - cpu.x_adv).abs().max() <= 1 / 255  # at most a rounding flip apart
    res = VAFA(steps=2, block_size=(8, 8, 8)).run(net, x.to(dev), y.to(dev))
    assert torch.isfinite(res.x_adv).all() and (res.extra["q_largest"] <= 20).all()
