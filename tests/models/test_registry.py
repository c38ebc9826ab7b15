"""Registry: every name builds at a tiny size with the right logits shape and a JSON-able spec."""
from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from monai.networks.nets import UNETR, DynUNet

from medrobust.models import build_model, model_names, model_spec, register_model, registry
from medrobust.registry import Registry

GN2 = ("group", {"num_groups": 2})
CASES = [  # (name, spatial_dims, image shape, kwargs); classifiers give (B, K)
    ("unet", 2, (16, 16), {"channels": (4, 8, 16), "strides": (2, 2)}),
    ("unet", 3, (16, 16, 16), {"channels": (4, 8, 16), "strides": (2, 2)}),
    ("basicunet", 2, (32, 32), {"features": (4, 4, 8, 8, 16, 4)}),
    ("segresnet", 2, (16, 16), {"init_filters": 4, "blocks_down": (1, 1), "blocks_up": (1,), "norm": GN2}),
    ("segresnet", 3, (16, 16, 16), {"init_filters": 4, "blocks_down": (1, 1), "blocks_up": (1,), "norm": GN2}),
    ("unetr", 3, (16, 16, 16), {"img_size": 16, "feature_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2}),
    ("unetr", 2, (32, 32), {"img_size": 32, "feature_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2}),
    ("dynunet", 2, (16, 16), {"patch_size": (16, 16), "filters": (4, 8, 16)}),
    ("dynunet", 3, (16, 16, 16), {"patch_size": (16, 16, 16), "spacing": (1.0, 1.0, 2.5),
                                  "filters": (4, 8, 8, 16)}),
    ("swinunetr", 2, (64, 64), {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1),
                                "window_size": 4}),
    ("densenet121", 2, (32, 32), {"init_features": 8, "growth_rate": 4, "block_config": (1, 1, 1, 1)}),
    ("densenet121", 3, (32, 32, 32), {"init_features": 8, "growth_rate": 4, "block_config": (1, 1, 1, 1)}),
    ("resnet18", 2, (32, 32), {}),
    ("resnet34", 2, (32, 32), {}),
    ("resnet50", 2, (32, 32), {}),
    ("efficientnet-b0", 2, (32, 32), {}),
    ("ensemble", 2, (16, 16), {"members": [{"architecture": "unet", "kwargs": {"channels": (4, 8), "strides": (2,)}},
                                           {"architecture": "segresnet", "kwargs": {"init_filters": 4,
                                                                                    "norm": GN2}}]}),
    ("cooperative", 2, (16, 16), {}),
    ("assimilation", 2, (32, 32), {"texture_width": 4, "texture_blocks": 1, "colour_width": 4}),
]
CLASSIFIERS = {"densenet121", "resnet18", "resnet34", "resnet50", "efficientnet-b0", "assimilation"}


def test_every_name_has_a_case() -> None:
    assert {c[0] for c in CASES} >= set(model_names())


@pytest.mark.parametrize("name,dims,shape,kwargs", CASES, ids=[f"{c[0]}-{c[1]}d" for c in CASES])
def test_build_gives_logits_of_the_right_shape(name: str, dims: int, shape: tuple, kwargs: dict) -> None:
    model = build_model(name, spatial_dims=dims, in_channels=2, out_channels=3, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 2, *shape))
    assert out.shape == ((2, 3) if name in CLASSIFIERS else (2, 3, *shape))
    spec = model_spec(model)
    assert spec["architecture"] == name
    assert spec["kwargs"]["spatial_dims"] == dims and spec["kwargs"]["out_channels"] == 3
    assert json.loads(json.dumps(spec)) == spec  # checkpointable as is (tuples became lists)


def test_unet_defaults_are_small_and_overridable() -> None:
    default = build_model("unet", spatial_dims=2)
    assert model_spec(default)["kwargs"]["out_channels"] == 2
    assert sum(p.numel() for p in default.parameters()) < 2_000_000
    small = build_model("unet", spatial_dims=2, channels=(4, 8), strides=(2,), num_res_units=0)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in default.parameters()) / 100


def test_spec_rebuilds_the_same_architecture() -> None:
    model = build_model("unet", spatial_dims=3, out_channels=4, channels=(4, 8), strides=(2,))
    spec = model_spec(model)
    again = build_model(spec["architecture"], **spec["kwargs"])
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vnet'.*unet.*efficientnet-b0"):
        build_model("vnet")


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="never downloads"):
        build_model("resnet18", spatial_dims=2, pretrained=True)
    with pytest.raises(ValueError, match="img_size"):
        build_model("unetr")
    with pytest.raises(ValueError, match="spatial_dims"):
        build_model("unet", spatial_dims=4)
    with pytest.raises(ValueError, match="medrobust_spec"):
        model_spec(torch.nn.Linear(2, 2))


def test_register_model_adds_a_composite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", Registry("model", registry._MODELS))

    @registry.register_model("scaled_unet")
    def _build(spatial_dims: int, in_channels: int, out_channels: int, factor: float = 1.0) -> torch.nn.Module:
        inner = registry.build_model("unet", spatial_dims, in_channels, out_channels, channels=(4, 8), strides=(2,))
        return torch.nn.Sequential(inner)

    model = registry.build_model("scaled_unet", spatial_dims=2, factor=2.0)
    assert "scaled_unet" in model_names()  # read at call time
    assert model_spec(model) == {"architecture": "scaled_unet",
                                 "kwargs": {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "factor": 2.0}}
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet")(_build)


def test_unetr_embeds_patches_linearly_as_the_paper() -> None:
    kw = {"img_size": 16, "feature_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2}

    def embedding_layers(**extra: Any) -> set[type]:
        net = build_model("unetr", spatial_dims=3, **kw, **extra)
        assert isinstance(net, UNETR)
        return {type(m) for m in net.vit.patch_embedding.modules()}

    kinds = embedding_layers()
    assert torch.nn.Linear in kinds and torch.nn.Conv3d not in kinds  # proj_type="perceptron"
    assert torch.nn.Conv3d in embedding_layers(proj_type="conv")  # MONAI's default on request


def _seat_get_kernels_strides(sizes: list[float], spacings: list[float]) -> tuple[list, list]:
    """Transcription of SEAT's settings.get_kernels_strides (MONAI's dynunet tutorial) for one task."""
    input_size = sizes
    strides, kernels = [], []
    while True:
        spacing_ratio = [sp / min(spacings) for sp in spacings]
        stride = [2 if ratio <= 2 and size >= 8 else 1 for (ratio, size) in zip(spacing_ratio, sizes)]
        kernel = [3 if ratio <= 2 else 1 for ratio in spacing_ratio]
        if all(s == 1 for s in stride):
            break
        for idx, (i, j) in enumerate(zip(sizes, stride)):
            if i % j != 0:
                raise ValueError(f"Patch size is not supported, please try to modify the size {input_size[idx]}")
        sizes = [i / j for i, j in zip(sizes, stride)]
        spacings = [i * j for i, j in zip(spacings, stride)]
        kernels.append(kernel)
        strides.append(stride)
    strides.insert(0, len(spacings) * [1])
    kernels.append(len(spacings) * [3])
    return kernels, strides


@pytest.mark.parametrize("patch, spacing", [
    ([128, 128, 128], [1.0, 1.0, 1.0]), ([160, 192, 80], [1.25, 1.25, 1.37]), ([40, 56, 40], [1.0, 1.0, 1.0]),
    ([320, 256, 20], [0.62, 0.62, 3.6]), ([192, 160, 64], [0.79, 0.79, 1.6]), ([192, 160, 56], [0.78, 0.78, 3.0]),
])
def test_dynunet_kernels_and_strides_follow_seats_nnunet_rule(patch: list[int], spacing: list[float]) -> None:
    expected = _seat_get_kernels_strides(list(patch), list(spacing))
    assert registry.nnunet_kernels_strides(patch, spacing) == expected
    net = build_model("dynunet", spatial_dims=3, patch_size=patch, spacing=spacing)
    assert isinstance(net, DynUNet)
    assert (net.kernel_size, net.strides) == expected
    assert net.upsample_kernel_size == expected[1][1:]  # as SEAT: strides[1:]
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    assert model_spec(net)["kwargs"]["patch_size"] == patch  # rebuilt from the spec alone


def test_dynunet_needs_a_patch_size_or_its_kernels() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        build_model("dynunet", spatial_dims=3)
    with pytest.raises(ValueError, match="not divisible"):
        registry.nnunet_kernels_strides([18, 16], [1.0, 1.0])  # 9 at the second level
    net = build_model("dynunet", spatial_dims=2, kernel_size=[3, 3, 3], strides=[1, 2, 2], filters=[4, 8, 16])
    assert isinstance(net, DynUNet)
    assert list(net.strides) == [1, 2, 2] and list(net.upsample_kernel_size) == [2, 2]  # given, not derived
