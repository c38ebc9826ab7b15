"""The cooperative FTN + STN composite: shapes in 2D and 3D, forward = STN(FTN), checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medrobust.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from medrobust.models.cooperative import CooperativeNet, unwrap_cooperative
from medrobust.models.wrappers import SlidingWindow

TINY: dict[str, Any] = {"channels": [4, 8]}


def _net(classes: int = 3, **kw: Any) -> CooperativeNet:
    """A tiny 2D composite, typed as what the registry builds."""
    net = build_model("cooperative", spatial_dims=2, in_channels=1, out_channels=classes, **TINY, **kw)
    assert isinstance(net, CooperativeNet)
    return net


@pytest.mark.parametrize("dims,size", [(2, (20, 24)), (3, (16, 12, 16)), (3, (10, 16, 9))])
def test_shapes_of_every_part_in_2d_and_3d(dims: int, size: tuple[int, ...]) -> None:
    net = build_model("cooperative", spatial_dims=dims, in_channels=2, out_channels=3, **TINY)
    assert isinstance(net, CooperativeNet) and net.factor == 4
    x = torch.randn(2, 2, *size)
    assert net(x).shape == (2, 3, *size)  # sides that are not multiples of 4 are padded, then cropped
    xp = net.pad(x)
    assert all(s % 4 == 0 and 0 <= s - t < 4 for s, t in zip(xp.shape[2:], size))
    z_i = net.encode(xp)
    assert z_i.shape == (2, 8, *(s // 4 for s in xp.shape[2:]))
    z_s = net.decouple(z_i)
    assert z_s.shape == z_i.shape
    assert net.decode_image(z_i).shape == xp.shape
    logits = net.decode_seg(z_s)
    assert logits.shape == (2, 3, *xp.shape[2:])
    assert net.refine(logits).shape == logits.shape


def test_image_decoder_ends_with_the_seeds_sigmoid_unless_switched_off() -> None:
    torch.manual_seed(0)
    net, linear = _net().eval(), _net(image_sigmoid=False).eval()
    linear.load_state_dict(net.state_dict())  # no parameters added: the same weights fit both
    z = 3 * torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        raw = linear.decode_image(z)
        torch.testing.assert_close(net.decode_image(z), torch.sigmoid(raw))  # the seed's last_act=nn.Sigmoid()
        torch.testing.assert_close(raw, net.image_decoder(z))
    assert float(raw.amin()) < 0 or float(raw.amax()) > 1  # the option matters on these codes


def test_forward_is_the_stn_refinement_of_the_ftn_prediction() -> None:
    torch.manual_seed(0)
    net = _net().eval()
    x = torch.randn(2, 1, 16, 16)
    ftn = net.decode_seg(net.decouple(net.encode(x)))
    expected = net.shape_correct(F.softmax(ftn / 2.0, dim=1))
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert not torch.allclose(net(x), ftn, atol=1e-3)  # the STN is not skipped


def test_gradients_reach_the_input_and_both_networks() -> None:
    net = _net(classes=2).eval()
    x = torch.randn(1, 1, 16, 16, requires_grad=True)
    net(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for part in (net.image_encoder, net.decoupler, net.segmentation_decoder, net.shape_encoder, net.shape_decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_checkpoint_round_trip_holds_both_networks(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = build_model("cooperative", spatial_dims=3, in_channels=1, out_channels=3, temperature=1.5, **TINY)
    net.train()
    net(torch.randn(2, 1, 8, 8, 8))  # move the BN running statistics away from their defaults
    net.eval()
    path = save_checkpoint(tmp_path / "ck", net, classes=["bg", "a", "b"], recipe="cooperative")
    loaded, info = load_checkpoint(path)
    assert info.architecture == "cooperative" and info.recipe == "cooperative"
    assert isinstance(loaded, CooperativeNet) and loaded.temperature == 1.5
    assert set(loaded.state_dict()) == set(net.state_dict())
    assert any(k.startswith("shape_decoder.") for k in loaded.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.equal(loaded(x), net(x))
    with pytest.raises(CheckpointError, match="cooperative"):
        load_checkpoint(path, expected_architecture="unet")


def test_bad_kwargs_are_named() -> None:
    with pytest.raises(ValueError, match="norm"):
        build_model("cooperative", spatial_dims=2, norm="group")
    with pytest.raises(ValueError, match="temperature"):
        build_model("cooperative", spatial_dims=2, temperature=0)
    with pytest.raises(ValueError, match="channels"):
        build_model("cooperative", spatial_dims=2, channels=[])


def test_unwrap_finds_the_composite_inside_a_sliding_window() -> None:
    net = build_model("cooperative", spatial_dims=2, out_channels=2, **TINY)
    assert unwrap_cooperative(SlidingWindow(net, roi_size=(16, 16))) is net
    assert unwrap_cooperative(build_model("unet", spatial_dims=2, channels=(4, 8), strides=(2,))) is None
