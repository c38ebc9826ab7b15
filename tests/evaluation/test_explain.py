"""Grad-CAM: layer found generically (2D, 3D), equal to the textbook formula per sample,
ensembles as the mean of members, the caller's model untouched, top-10% IoU, example files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.evaluation.explain import (
    GradCAMExplainer,
    cam_path,
    layer_candidates,
    load_example_cams,
    prune_cams,
    save_example_cams,
    top_fraction_iou,
)
from medrobust.models import Ensemble, build_model

TINY_RESNET = {"widen_factor": 0.125, "conv1_t_stride": 1, "no_max_pool": True}



class TinyCNN(nn.Module):
    """conv -> relu -> global mean -> linear: Grad-CAM of ``act`` has a closed form."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, stride=2)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def _manual_gradcam(model: TinyCNN, x: torch.Tensor, k: int) -> torch.Tensor:
    acti = model.act(model.conv(x))  # (1, 4, h, w)
    weights = model.fc.weight[k] / acti[0, 0].numel()  # d logit_k / d A_c(ij) is constant over space
    cam = F.relu((weights[None, :, None, None] * acti).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return (cam / cam.max()).detach()


def test_gradcam_equals_the_formula_for_each_sample_of_a_batch() -> None:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(3, 1, 12, 12)
    classes = torch.tensor([0, 2, 1])
    cams = GradCAMExplainer(model, "act")(x, classes)
    assert cams.shape == (3, 1, 12, 12)
    for b in range(3):  # MONAI alone would sum logits[:, classes] (a 3 x 3 block) and mix the samples
        torch.testing.assert_close(cams[b:b + 1], _manual_gradcam(model, x[b:b + 1], int(classes[b])), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, dims, size, kwargs, layer", [
    ("resnet18", 2, 32, TINY_RESNET, "layer4"),
    ("densenet121", 2, 32, {"init_features": 8, "growth_rate": 4, "block_config": (2, 2)}, "class_layers.relu"),
    ("resnet18", 3, 16, TINY_RESNET, "layer4"),
])
def test_last_convolutional_stage_is_found_in_2d_and_3d(name: str, dims: int, size: int, kwargs: dict,
                                                        layer: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, spatial_dims=dims, in_channels=1, out_channels=2, **kwargs).eval()
    x = torch.rand(2, 1, *([size] * dims))
    explainer = GradCAMExplainer(model)
    cams = explainer(x)
    assert explainer.layer_name == layer == layer_candidates(model, x)[0]
    assert cams.shape == (2, 1, *([size] * dims))
    peaks = cams.flatten(1).amax(1)  # 1, or 0 where no channel has positive evidence (ReLU of the sum)
    assert cams.min() >= 0 and bool(((peaks - 1).abs() < 1e-6).logical_or(peaks == 0).all())


def test_caller_model_keeps_its_mode_and_carries_no_hooks() -> None:
    model = build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2, **TINY_RESNET).train()
    GradCAMExplainer(model)(torch.rand(1, 1, 32, 32))
    assert model.training
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_ensemble_map_is_the_mean_of_member_maps_for_the_ensemble_class() -> None:
    torch.manual_seed(0)
    members = [TinyCNN().eval() for _ in range(2)]
    x = torch.rand(2, 1, 12, 12)
    cls = Ensemble(members)(x).argmax(1)
    mean = torch.stack([GradCAMExplainer(m, "act")(x, cls) for m in members]).mean(0)
    expected = mean / mean.flatten(1).amax(1)[:, None, None, None]
    torch.testing.assert_close(GradCAMExplainer(Ensemble(members), "act")(x), expected)


def test_bad_target_layer_is_named() -> None:
    with pytest.raises(ValueError, match="target_layer: 'layer9'"):
        GradCAMExplainer(TinyCNN(), "layer9")(torch.rand(1, 1, 8, 8))


def test_top_fraction_iou() -> None:
    a = torch.arange(100.0).reshape(1, 1, 10, 10)
    assert float(top_fraction_iou(a, a)[0]) == 1.0
    assert float(top_fraction_iou(a, -a)[0]) == 0.0  # top 10 vs bottom 10 voxels
    b = a.clone()
    b.view(-1)[95:] = -1  # 5 of the top 10 leave; the next 5 come in
    assert float(top_fraction_iou(a, b)[0]) == pytest.approx(5 / 15)
    with pytest.raises(ValueError, match="differ in shape"):
        top_fraction_iou(a, a[..., :5])


def test_example_cams_round_trip_and_pruning(tmp_path: Path) -> None:
    model = TinyCNN().eval()
    x = torch.rand(1, 1, 12, 12)
    example = tmp_path / "resnet_pgd_4_case1-abc.npz"
    example.write_bytes(b"")
    path = save_example_cams(example, model, x, x + 0.05, {"model": "tiny", "classes": ["a", "b", "c"], "low": 0.0,
                                                           "high": 1.0, "label": 1}, target_layer="act")
    assert path == cam_path(example) and path.name.endswith(".gradcam.npz")
    cams = load_example_cams(path)
    assert cams["cam_clean"].shape == cams["image"].shape == (12, 12) and 0 <= cams["iou"] <= 1
    assert cams["layer"] == "act" and cams["info"]["classes"] == ["a", "b", "c"] and cams["slice"] == -1
    assert np.isclose(cams["cam_clean"].max(), 1.0)
    assert prune_cams(tmp_path) == 0
    example.unlink()
    assert prune_cams(tmp_path) == 1 and not path.exists()
