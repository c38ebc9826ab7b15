"""SlidingWindow: forward equals MONAI; the windowed gradient equals the full-graph one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from medrobust.models import SlidingWindow, build_model


def _tiny_unet(dims: int) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("unet", spatial_dims=dims, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                       num_res_units=1).double().eval()


def _ce(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample CE against a fixed, position-dependent target, (B,)."""
    target = (torch.arange(logits[:, 0].numel()).reshape(logits[:, 0].shape) % logits.shape[1])
    return F.cross_entropy(logits, target, reduction="none").flatten(1).mean(1)


CASES = [  # (dims, image shape, roi, overlap, mode); 4 to 8 overlapping windows per image
    (2, (14, 12), (8, 8), 0.25, "gaussian"),
    (2, (14, 12), (8, 8), 0.5, "constant"),
    (3, (12, 10, 9), (8, 8, 8), 0.25, "constant"),
    (3, (12, 10, 9), (8, 8, 8), 0.5, "gaussian"),
    (3, (6, 10, 8), (8, 8, 8), 0.25, "gaussian"),  # smaller than the ROI on one axis: padded
]


@pytest.mark.parametrize("dims,shape,roi,overlap,mode", CASES)
def test_forward_equals_monai_and_windowed_gradient_equals_full_graph(dims: int, shape: tuple, roi: tuple,
                                                                      overlap: float, mode: str) -> None:
    model = _tiny_unet(dims)
    x = torch.randn(2, 1, *shape, dtype=torch.float64)
    sw = SlidingWindow(model, roi, overlap=overlap, mode=mode, sw_batch_size=3)
    with torch.no_grad():
        out = sw(x)
        assert out.shape == (2, 3, *shape)
        assert torch.equal(out, sliding_window_inference(x, roi, 3, model, overlap=overlap, mode=mode))

    xr = x.clone().requires_grad_(True)
    ref_logits = sw(xr)
    ref_loss = _ce(ref_logits)
    (ref_grad,) = torch.autograd.grad(ref_loss.sum(), xr)

    logits, loss, grad = sw.loss_and_input_grad(x, _ce)
    assert grad.shape == x.shape and loss.shape == (2,)
    assert not logits.requires_grad and not loss.requires_grad and not grad.requires_grad
    torch.testing.assert_close(logits, ref_logits.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(loss, ref_loss.detach(), atol=1e-12, rtol=0)
    assert ref_grad.abs().max() > 1e-6  # the comparison is not trivially 0 == 0
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)

    dropped, lean_loss, lean_grad = sw.loss_and_input_grad(x, _ce, keep_logits=False)
    assert dropped is None  # freed before the window pass; the gradient is the same
    assert torch.equal(lean_loss, loss) and torch.equal(lean_grad, grad)


def test_gradient_leaves_model_and_input_untouched() -> None:
    model = _tiny_unet(2).train()
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    x0 = x.clone()
    SlidingWindow(model, (8, 8)).loss_and_input_grad(x, _ce)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training
    assert torch.equal(x, x0) and not x.requires_grad


def test_per_sample_gradient_is_independent() -> None:
    model = _tiny_unet(2)
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    sw = SlidingWindow(model, (8, 8), overlap=0.5)
    _, _, both = sw.loss_and_input_grad(x, _ce)
    _, _, first = sw.loss_and_input_grad(x[:1], _ce)
    torch.testing.assert_close(both[:1], first, atol=1e-12, rtol=0)


def test_bad_arguments_raise() -> None:
    model = _tiny_unet(2)
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindow(model, (8, 8), overlap=1.0)
    with pytest.raises(ValueError, match="mode"):
        SlidingWindow(model, (8, 8), mode="linear")
    with pytest.raises(ValueError, match="roi_size"):
        SlidingWindow(model, (8,))
    sw = SlidingWindow(model, (8, 8))
    with pytest.raises(ValueError, match="roi_size"):
        sw(torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="per-sample loss"):
        sw.loss_and_input_grad(torch.zeros(2, 1, 8, 8, dtype=torch.float64), lambda z: z.sum())
