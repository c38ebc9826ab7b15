"""Budgets of multi-channel z-scored data are per (case, channel), as SEAT takes them (issue 16, item 4).

A 4-channel z-scored volume (FLAIR/T1/T1c/T2-like) whose channels span very different
ranges: with per-channel ranges an L∞ budget of 8/255 is 8/255 of each channel's own range
and the valid range is each channel's, in evaluation and in the training recipes; a
transcription of SEAT's per-channel PGD gives the same iterates.
"""
from __future__ import annotations

import pytest
import torch

from medrobust.attacks.channel_ranges import ChannelRanges
from medrobust.evaluation.core import PER_CHANNEL_NOTE, perturb
from medrobust.evaluation.specs import AttackSpec
from medrobust.evaluation.types import Case, Outcome
from medrobust.training import build_recipe
from medrobust.training.adversarial import PGDAdversarialTraining
from medrobust.units import IntensityMap

WIDTHS = (4.0, 1.0, 0.25, 2.0)  # each channel's spread; the narrow third is 16x narrower than the first
EPS = 8.0


def _volume(batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 10, 10, 6, generator=g)
    return x * torch.tensor(WIDTHS).view(1, 4, 1, 1, 1)


def _segmenter() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 1))


def _labels(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :1] > 0).long() + (x[:, -1:] > 0).long()


def _per_channel_linf(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    return (x_adv - x).abs().flatten(2).amax(2)  # (B, C)


def _case(x: torch.Tensor, model: torch.nn.Module) -> Case:
    return Case("c0", {"meta": {}}, x, _labels(x), IntensityMap.z_score(0.0, 1.0), model, model(x), Outcome(1.0), 1.0)


@pytest.mark.parametrize("attack", ["pgd", "apgd", "fgsm"])
def test_evaluation_budget_is_per_channel_by_default(attack: str) -> None:
    x, model = _volume(), _segmenter()
    spec = AttackSpec(attack=attack, eps=[EPS], eps_unit="1/255", options={} if attack == "fgsm" else {"steps": 5})
    done = perturb(spec, EPS, _case(x, model), seed=0)
    ranges = ChannelRanges.of(x)
    width = ranges.width.reshape(1, 4)
    used = _per_channel_linf(x, done.x) / width
    assert bool((used <= EPS / 255 + 1e-5).all()), used
    assert bool((used > 0.5 * EPS / 255).all())  # every channel moved, each by its own 1/255
    low, high = ranges.low.reshape(1, 4), (ranges.low + ranges.width).reshape(1, 4)
    assert bool((done.x.flatten(2).amin(2) >= low - 1e-6).all() and (done.x.flatten(2).amax(2) <= high + 1e-6).all())
    assert done.method is not None and PER_CHANNEL_NOTE in done.method
    assert done.eps_model(x) == pytest.approx(EPS / 255 * max(float(w) for w in width[0]), rel=1e-5)


def test_switched_off_the_sample_range_gives_the_narrow_channel_a_larger_budget() -> None:
    """The fault of the issue: over all channels, the narrow channel gets ~16x its own 8/255."""
    x, model = _volume(), _segmenter()
    spec = AttackSpec(attack="pgd", eps=[EPS], eps_unit="1/255", options={"steps": 5})
    done = perturb(spec, EPS, _case(x, model), seed=0, per_channel=False)
    narrow = float(_per_channel_linf(x, done.x)[0, 2] / ChannelRanges.of(x).width.reshape(4)[2])
    assert narrow > 5 * EPS / 255
    assert done.method is not None and PER_CHANNEL_NOTE not in done.method


def test_single_channel_and_clipped_data_keep_one_range() -> None:
    x1 = _volume()[:, :1]
    model = torch.nn.Conv3d(1, 3, 1)
    spec = AttackSpec(attack="pgd", eps=[EPS], eps_unit="1/255", options={"steps": 2})
    assert perturb(spec, EPS, _case(x1, model), seed=0).channel_ranges is None
    ct = Case("c0", {"meta": {}}, _volume().clamp(0, 1), _labels(_volume()), IntensityMap.ct_window(-175, 250),
              _segmenter(), _segmenter()(_volume().clamp(0, 1)), Outcome(1.0), 1.0)
    assert perturb(spec, EPS, ct, seed=0).channel_ranges is None
    in_model_units = AttackSpec(attack="pgd", eps=[0.01], eps_unit="model", options={"steps": 2})
    assert perturb(in_model_units, 0.01, _case(_volume(), _segmenter()), seed=0).channel_ranges is None


def _seat_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
              steps: int) -> torch.Tensor:
    """SEAT's PGD on multi-modal data, transcribed: per (sample, channel) eps, step and clamp."""
    flat = x.flatten(2)
    lo, hi = flat.amin(2)[..., None, None, None], flat.amax(2)[..., None, None, None]
    eps_c, alpha_c = eps * (hi - lo), alpha * (hi - lo)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y[:, 0])
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha_c * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps_c), x + eps_c)
        x_adv = torch.min(torch.max(x_adv, lo), hi)
    return x_adv


def test_pgd_in_channel_ranges_follows_seats_per_channel_update() -> None:
    from medrobust.attacks import PGD
    from medrobust.attacks.channel_ranges import attack_batch
    from medrobust.units import budget_for_case

    x, model = _volume(2).double(), _segmenter().double()
    y = _labels(x)
    ref = _seat_pgd(model, x, y, EPS / 255, 2 / 255, steps=6)
    ours = attack_batch(lambda b: PGD(budget_for_case("linf", EPS, "1/255", b, None), steps=6, step_size=2,
                                      random_start=False, return_best=False, loss="ce"),
                        model, x, y, ChannelRanges.of(x))
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("recipe", ["pgd_at", "fast_at", "trades", "self_adaptive", "free_at"])
def test_training_recipes_take_per_channel_budgets(recipe: str) -> None:
    x, model = _volume(2), _segmenter()
    y = _labels(x)[:, 0]
    width = ChannelRanges.of(x).width.reshape(2, 4)
    made = build_recipe(recipe, eps=EPS, eps_unit="1/255")
    if isinstance(made, PGDAdversarialTraining):
        x_adv = made.adversarial(model, x, y.unsqueeze(1))
    else:  # TRADES and Free-AT build their adversarial batch inside the loss: capture the model's input
        seen: list[torch.Tensor] = []
        hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
        from medrobust.training.recipes import StepInfo
        loss, _ = made.batch_loss(model, x, y.unsqueeze(1), StepInfo(0, 0, 1))
        if recipe == "free_at":  # its perturbation grows from zero: take one replay step, then look
            loss.backward()
            made.after_backward(StepInfo(0, 0, 1))
            seen.clear()
            made.batch_loss(model, x, y.unsqueeze(1), StepInfo(0, 1, 1))
        hook.remove()
        x_adv = max(seen, key=lambda t: float((t - x).abs().max()))
    used = _per_channel_linf(x, x_adv) / width
    assert bool((used <= EPS / 255 + 1e-5).all()), used
    assert bool((used > 0.3 * EPS / 255).all()), used
    off = build_recipe(recipe, eps=EPS, eps_unit="1/255", per_channel=False)
    assert off.params()["per_channel"] is False


def test_grid_key_parses_and_its_default_keeps_earlier_config_hashes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medrobust.evaluation.config import parse_config

    (tmp_path / "model.json").write_text("{}")
    base = {"models": [{"name": "unet", "checkpoint": "model.json"}], "data": {"demo": "segmentation"},
            "perturbations": [{"attack": "pgd", "eps": [2], "eps_unit": "1/255"}]}
    default = parse_config(base, base_dir=tmp_path)
    off = parse_config({**base, "per_channel_ranges": False}, base_dir=tmp_path)
    assert default.per_channel_ranges is None and off.per_channel_ranges is False
    assert default.config_hash != off.config_hash
    body = default.model_dump(mode="json")
    assert "per_channel_ranges" in body  # present in the config, left out of the hash while it is the default
