"""Domain assimilation F(B(C(T(x)))) is one module whose input gradient is the composed one."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.models import build_model, load_checkpoint, model_spec, save_checkpoint
from medrobust.models.assimilation import DomainAssimilation

NARROW = {"widen_factor": 0.25}  # resnet18 with 16..128 channels: same layers, a 16th of the weights


def _tiny(spatial_dims: int = 2, backbone: str = "resnet18", **kwargs: object) -> DomainAssimilation:
    model = build_model("assimilation", spatial_dims=spatial_dims, in_channels=1, out_channels=2,
                        backbone=backbone, backbone_kwargs=NARROW, texture_width=4, texture_blocks=1,
                        colour_width=4, **kwargs)
    assert isinstance(model, DomainAssimilation)
    return model.eval()


def test_modules_shapes_ranges_and_identity_texture_at_start() -> None:
    model = _tiny()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.texture(x), x)
    image = model.assimilate(x)
    assert image.shape == (2, 3, 32, 32) and image.min() >= 0 and image.max() <= 1
    # C starts as the grey image at photo contrast, whatever the units of x
    torch.testing.assert_close(image[:, 0], image[:, 2])
    torch.testing.assert_close(model.assimilate(100.0 * x + 7.0), image, rtol=1e-4, atol=1e-5)
    assert 0.2 < float(image.detach().std()) < 0.4
    assert model(x).shape == (2, 2)


def test_input_gradient_is_the_gradient_through_the_composed_modules() -> None:
    torch.manual_seed(0)
    model = _tiny().double()
    with torch.no_grad():  # leave the identity start so that T takes part in the gradient
        model.texture.head.weight.normal_(0.0, 0.1)
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)

    def margin(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 1] - logits[:, 0]).sum()

    (grad,) = torch.autograd.grad(margin(model(x)), x)
    assert grad.abs().sum() > 0
    (composed,) = torch.autograd.grad(margin(model.backbone(model.colour(model.texture(x)))), x)
    torch.testing.assert_close(grad, composed)
    # and it is the true derivative (nothing detached or straight-through): a central
    # difference along a random direction (h tiny: ReLU and max-pool kinks)
    direction = torch.randn_like(x)
    h = 1e-7
    with torch.no_grad():
        numeric = (margin(model(x + h * direction)) - margin(model(x - h * direction))) / (2 * h)
    torch.testing.assert_close((grad * direction).sum(), numeric, rtol=1e-4, atol=1e-9)


def test_3d_chain_passes_gradients() -> None:
    model = _tiny(spatial_dims=3)
    x = torch.randn(1, 1, 16, 16, 16, requires_grad=True)
    logits = model(x)
    assert logits.shape == (1, 2)
    logits[0, 0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_backbone_weights_initialise_b_and_the_checkpoint_does_not_need_them(tmp_path: Path) -> None:
    natural = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=5, **NARROW)
    source = save_checkpoint(tmp_path / "natural", natural, classes=list("abcde"))
    model = _tiny(backbone_weights=str(source))
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, natural.layer3[0].conv1.weight)
    assert model.pretrained_report is not None and model.pretrained_report.head_skipped == ["fc.weight", "fc.bias"]
    spec = model_spec(model)
    assert "backbone_weights" not in spec["kwargs"]
    assert spec["kwargs"]["backbone"] == "resnet18" and spec["kwargs"]["backbone_kwargs"] == NARROW
    inherited = build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2, backbone_weights=str(source))
    assert model_spec(inherited)["kwargs"]["backbone_kwargs"] == NARROW  # taken from the natural checkpoint
    saved = save_checkpoint(tmp_path / "run", model, classes=["healthy", "lesion"], recipe="assimilation")
    (tmp_path / "natural" / "model.safetensors").unlink()
    loaded, info = load_checkpoint(saved)
    assert info.architecture == "assimilation"
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_bad_backbones_are_named() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        _tiny(backbone="resnet9")
    with pytest.raises(ValueError, match="backbone: 'assimilation'"):
        _tiny(backbone="assimilation")
