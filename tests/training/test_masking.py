"""Latent masking: each scheme masks where and only where it should; norm stats stay; bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.training.masking import (
    channel_mask,
    code_gradient,
    frozen_norm_stats,
    mask_code,
    random_channel_mask,
    spatial_mask,
    top_fraction,
)


def _selected(mask: torch.Tensor) -> torch.Tensor:
    return mask < 1


@pytest.mark.parametrize("dims", [2, 3])
def test_random_dropout_masks_whole_channels_with_probability_p(dims: int) -> None:
    torch.manual_seed(0)
    code = torch.rand(64, 32, *(3,) * dims) + 0.1
    masked, mask = mask_code(code, "random", 0.5, soft=False)
    assert mask.shape == (64, 32, *(1,) * dims)
    dropped = (masked == 0).reshape(64, 32, -1)
    assert torch.equal(dropped.all(2), dropped.any(2))  # a channel is dropped whole or not at all
    assert torch.equal(masked[~dropped.all(2)], code[~dropped.all(2)])  # kept channels are not rescaled
    assert abs(dropped.all(2).float().mean().item() - 0.5) < 0.05  # 2048 channels: std of the rate 0.011
    assert float(_selected(random_channel_mask(code, 0.0)).float().mean()) == 0.0
    assert float(_selected(random_channel_mask(code, 1.0, soft=False)).float().mean()) == 1.0


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_rescaled_random_dropout_is_the_seeds_dropout2d(p: float) -> None:
    code = torch.rand(8, 16, 5, 5) + 0.1
    torch.manual_seed(3)
    masked, mask = mask_code(code, "random", p, soft=True, rescale=True)  # soft does not apply to it
    torch.manual_seed(3)
    reference = torch.nn.functional.dropout2d(code, p=p)  # the seed: F.dropout2d(latent_code, p=threshold)
    torch.testing.assert_close(masked, reference)
    kept = mask != 0
    torch.testing.assert_close(mask[kept], torch.full_like(mask[kept], 1 / (1 - p)))
    assert bool((~kept).any()) and bool(kept.any())


def test_channel_mask_hides_the_top_k_whole_channels() -> None:
    torch.manual_seed(0)
    code = torch.rand(3, 10, 4, 5) + 0.1
    grad = torch.randn(3, 10, 4, 5)
    mask = channel_mask(code, grad, p=0.35, convention="published", soft=False)
    assert mask.shape == (3, 10, 1, 1)
    sel = _selected(mask).reshape(3, 10)
    assert sel.sum(1).tolist() == [3, 3, 3]  # int(10 * 0.35)
    top = grad.mean((2, 3)).topk(3, dim=1).indices
    assert all(set(top[b].tolist()) == set(sel[b].nonzero().flatten().tolist()) for b in range(3))
    masked = code * mask
    assert torch.all(masked[sel] == 0) and torch.equal(masked[~sel], code[~sel])


def test_spatial_mask_hides_whole_positions_across_channels() -> None:
    torch.manual_seed(1)
    code = torch.rand(2, 6, 4, 4, 4) + 0.1
    grad = torch.randn(2, 6, 4, 4, 4)
    mask = spatial_mask(code, grad, p=0.25, convention="loss_increasing", soft=True)
    assert mask.shape == (2, 1, 4, 4, 4)
    sel = _selected(mask).reshape(2, -1)
    assert sel.sum(1).tolist() == [16, 16]  # int(64 * 0.25)
    score = (-grad * code).mean(1).reshape(2, -1)
    assert all(set(score[b].topk(16).indices.tolist()) == set(sel[b].nonzero().flatten().tolist()) for b in range(2))
    values = mask.reshape(2, -1)
    assert torch.all((values[sel] >= 0) & (values[sel] < 0.5)) and torch.all(values[~sel] == 1)  # soft factors
    keep = ~_selected(mask).expand_as(code)
    assert torch.equal((code * mask)[keep], code[keep])


def test_conventions_rank_by_gradient_or_by_first_order_loss_increase() -> None:
    code = torch.tensor([1.0, 1.0, 3.0, 0.5]).reshape(1, 4, 1, 1)
    grad = torch.tensor([2.0, -1.0, -0.5, 0.1]).reshape(1, 4, 1, 1)
    published = _selected(channel_mask(code, grad, 0.25, "published", soft=False)).flatten()
    increasing = _selected(channel_mask(code, grad, 0.25, "loss_increasing", soft=False)).flatten()
    assert published.nonzero().flatten().tolist() == [0]  # largest gradient: -g*z = -2, the loss falls
    assert increasing.nonzero().flatten().tolist() == [2]  # -g*z = 1.5, the largest first-order increase


def test_targeted_masking_computes_only_the_code_gradient() -> None:
    decoder = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))
    code = torch.rand(2, 4, 6, 6)
    target = torch.rand(2, 1, 6, 6)
    grad = code_gradient(code, decoder, lambda out: ((out - target) ** 2).mean())
    assert grad.shape == code.shape and grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.parameters())
    masked, _ = mask_code(code, "channel", 0.5, decode=decoder, loss=lambda out: ((out - target) ** 2).mean())
    assert not masked.requires_grad and all(p.grad is None for p in decoder.parameters())


def test_frozen_norm_stats_keeps_running_statistics_and_earlier_graphs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.InstanceNorm3d(4, track_running_stats=True)).train()
    x = torch.randn(2, 1, 6, 6, 6)
    earlier = net(x).sum()  # a graph that saved the norm buffers
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    with frozen_norm_stats(net):
        out = net(3 * x + 1)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    earlier.backward()  # would fail if the buffers had been written in place
    assert net[0].weight.grad is not None and out.shape == (2, 4, 4, 4, 4)
    net(3 * x + 1)  # outside the context the statistics move again
    assert not torch.equal(before["1.running_mean"], net.state_dict()["1.running_mean"])


def test_bad_masking_arguments_are_named() -> None:
    code = torch.rand(1, 4, 2, 2)
    with pytest.raises(ValueError, match="masking scheme 'cutout'"):
        mask_code(code, "cutout", 0.5)
    with pytest.raises(ValueError, match="p must be in"):
        mask_code(code, "random", 1.5)
    with pytest.raises(ValueError, match="p must be in"):
        top_fraction(torch.rand(1, 4), -0.1)
    with pytest.raises(ValueError, match="convention"):
        mask_code(code, "random", 0.5, convention="largest")
    with pytest.raises(ValueError, match="decode"):
        mask_code(code, "spatial", 0.5)
