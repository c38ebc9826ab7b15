"""Ensemble: both averaging modes, differentiability, majority vote, mismatched members."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.models import Ensemble, build_model, model_spec


class Fixed(nn.Module):
    """Returns the same logits (B, K) or (B, K, *spatial) for any input; grads flow via x."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0.0 * x.flatten(1).sum(1).reshape(-1, *([1] * (self.logits.ndim - 1)))


def test_mean_logits_and_mean_probs() -> None:
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 3.0]])
    x = torch.zeros(1, 1, 4, 4)
    ens = Ensemble([Fixed(a), Fixed(b)], mode="mean_logits")
    torch.testing.assert_close(ens(x), (a + b) / 2)
    ens = Ensemble([Fixed(a), Fixed(b)], mode="mean_probs")
    expected = ((torch.softmax(a, 1) + torch.softmax(b, 1)) / 2).log()
    torch.testing.assert_close(ens(x), expected)
    torch.testing.assert_close(ens(x).exp().sum(1), torch.ones(1))  # log-probabilities


@pytest.mark.parametrize("mode", ["mean_logits", "mean_probs"])
def test_forward_is_differentiable_through_every_member(mode: str) -> None:
    members = [build_model("unet", spatial_dims=2, out_channels=3, channels=(4, 8), strides=(2,)) for _ in range(2)]
    ens = Ensemble(members, mode=mode).eval()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    loss = nn.functional.cross_entropy(ens(x), torch.zeros(2, 8, 8, dtype=torch.long))
    (g,) = torch.autograd.grad(loss, x)
    assert g.abs().sum() > 0
    g_members = [torch.autograd.grad(nn.functional.cross_entropy(m(x), torch.zeros(2, 8, 8, dtype=torch.long)), x)[0]
                 for m in members]
    if mode == "mean_logits":  # CE of the mean logits is not the mean CE, but both members matter
        assert not torch.allclose(g, g_members[0]) and not torch.allclose(g, g_members[1])


def test_vote_is_majority_with_probability_tie_break() -> None:
    # sample 0: votes 1, 1, 0 -> 1 (although member 3 is very confident in 0)
    # sample 1: votes 0, 2 (only two members agree on nothing) -> tie broken by mean probability
    l1 = torch.tensor([[0.0, 1.0, -5.0], [3.0, 0.0, 0.0]])
    l2 = torch.tensor([[0.0, 1.0, -5.0], [0.0, 0.0, 1.0]])
    l3 = torch.tensor([[20.0, 0.0, -5.0], [0.0, 5.0, 0.0]])
    ens = Ensemble([Fixed(l1), Fixed(l2), Fixed(l3)])
    votes = ens.vote(torch.zeros(2, 1, 4))
    mean_p = (torch.softmax(l1, 1) + torch.softmax(l2, 1) + torch.softmax(l3, 1)) / 3
    assert votes.dtype == torch.int64 and votes.shape == (2,)
    assert votes[0] == 1
    assert votes[1] == mean_p[1].argmax()  # three-way tie (0, 2, 1): highest mean probability


def test_vote_segmentation_shape() -> None:
    seg = torch.zeros(1, 2, 3, 3)
    seg[:, 1, 0, 0] = 1.0
    ens = Ensemble([Fixed(seg), Fixed(seg), Fixed(-seg)])
    votes = ens.vote(torch.zeros(1, 1, 3, 3))
    assert votes.shape == (1, 3, 3)
    assert votes[0, 0, 0] == 1 and votes.sum() == 1


def test_members_with_different_class_counts_raise() -> None:
    with pytest.raises(ValueError, match="class counts"):
        Ensemble([build_model("unet", spatial_dims=2, out_channels=k, channels=(4, 8), strides=(2,)) for k in (2, 3)])
    ens = Ensemble([Fixed(torch.zeros(1, 2)), Fixed(torch.zeros(1, 3))])
    with pytest.raises(ValueError, match="class count"):
        ens(torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="mode"):
        Ensemble([Fixed(torch.zeros(1, 2))], mode="vote")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_registry_builds_members_recursively() -> None:
    ens = build_model("ensemble", spatial_dims=2, out_channels=3, mode="mean_probs",
                      members=[{"architecture": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}},
                               {"architecture": "basicunet", "kwargs": {"features": [4, 4, 8, 8, 16, 4]}}])
    assert isinstance(ens, Ensemble) and ens.mode == "mean_probs" and len(ens.members) == 2
    assert model_spec(ens.members[1])["kwargs"]["out_channels"] == 3
    assert ens(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"members\[0\]"):
        build_model("ensemble", members=["unet"])
    with pytest.raises(ValueError, match="class counts"):
        build_model("ensemble", spatial_dims=2, members=[
            {"architecture": "unet", "kwargs": {"out_channels": 4, "channels": [4, 8], "strides": [2]}},
            {"architecture": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}}])
