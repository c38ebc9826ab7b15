"""Differentiable GLCM: exact against scikit-image on quantised images, gradients, the loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from medrobust.training.glcm import (
    DEFAULT_ANGLES,
    FEATURES,
    GLCMLoss,
    glcm,
    glcm_features,
    texture_features,
    to_grayscale,
)

SKIMAGE_NAMES = {"asm": "ASM", "contrast": "contrast", "homogeneity": "homogeneity",
                 "correlation": "correlation", "dissimilarity": "dissimilarity"}


def _quantised(levels: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, levels, shape)
    img[0, 0], img[-1, -1] = 0, levels - 1  # the per-image min/max are levels 0 and L-1
    return img


@pytest.mark.parametrize("kernel,bandwidth", [("gaussian", 0.1), ("triangular", 1.0)])
def test_matches_skimage_on_quantised_patches(kernel: str, bandwidth: float) -> None:
    levels, patch = 8, 10
    img = _quantised(levels, (23, 21))  # 2 x 2 tiles; the last 3 rows and 1 column are left out
    x = torch.tensor(img / (levels - 1), dtype=torch.float64)[None, None]
    p = glcm(x, levels=levels, distance=3, patch_size=patch, bandwidth=bandwidth, kernel=kernel)
    assert p.shape == (1, 8, 2, 2, levels, levels)
    feats = glcm_features(p, homogeneity="skimage")
    angles = np.deg2rad(DEFAULT_ANGLES)
    for r in range(2):
        for c in range(2):
            tile = img[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].astype(np.uint8)
            ref = graycomatrix(tile, [3], angles, levels=levels, symmetric=False, normed=True)
            np.testing.assert_allclose(p[0, :, r, c].numpy(), np.moveaxis(ref[:, :, 0], -1, 0), atol=1e-3)
            for k, name in enumerate(FEATURES):
                expected = graycoprops(ref, SKIMAGE_NAMES[name])[0]
                np.testing.assert_allclose(feats[0, :, r, c, k].numpy(), expected, atol=1e-3, err_msg=name)


def test_slides_homogeneity_and_scaling() -> None:
    levels = 5
    p = torch.rand(3, levels, levels, dtype=torch.float64)
    p = p / p.sum((-2, -1), keepdim=True)
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    raw, scaled = glcm_features(p), glcm_features(p, scaled=True)
    np.testing.assert_allclose(raw[:, 2].numpy(), (p.numpy() / (1 + np.abs(i - j))).sum((1, 2)))
    np.testing.assert_allclose(scaled[:, 1], raw[:, 1] / (levels - 1) ** 2)
    np.testing.assert_allclose(scaled[:, 4], raw[:, 4] / (levels - 1))
    np.testing.assert_allclose(scaled[:, 3], raw[:, 3] / 2)
    feats = texture_features(torch.rand(2, 1, 24, 24), levels=8)
    assert feats.shape == (2, 5, 8, 1, 1)
    assert feats.min() >= -0.5 and feats.max() <= 1.0  # every scaled feature in a range of length 1


def test_opposite_angles_are_transposes_and_batches_are_independent() -> None:
    x = torch.rand(3, 1, 16, 16)
    p = glcm(x, levels=6, patch_size=8)
    torch.testing.assert_close(p[:, 4], p[:, 0].transpose(-1, -2))
    torch.testing.assert_close(p[1:2], glcm(x[1:2], levels=6, patch_size=8))
    torch.testing.assert_close(p.sum((-2, -1)), torch.ones(3, 8, 2, 2))


@pytest.mark.parametrize("which", ["features", "loss_gaussian", "loss_triangular"])
def test_gradcheck_float64(which: str) -> None:
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    if which == "features":
        def fn(inp: torch.Tensor) -> torch.Tensor:
            return texture_features(inp, levels=3, distance=1, patch_size=4, bandwidth=0.6)
    else:
        kernel, bandwidth = ("gaussian", 0.6) if which == "loss_gaussian" else ("triangular", 1.5)
        loss = GLCMLoss(levels=4, distance=1, patch_size=5, bandwidth=bandwidth, kernel=kernel, reduction="mean")

        def fn(inp: torch.Tensor) -> torch.Tensor:
            return loss(inp, target)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_loss_is_zero_for_same_texture_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 40, 40)
    loss = GLCMLoss(levels=8)
    assert loss(x, x).abs().max() < 1e-6
    # per-image range: brightness and contrast changes are not texture changes
    assert loss(3.0 * x + 1.0, x).abs().max() < 1e-4
    smooth = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    value = loss(smooth, x)
    assert value.shape == (2,) and (value > 1.0).all()
    mean = GLCMLoss(levels=8, reduction="mean")(smooth, x)
    assert (mean < value).all()  # the max over features exceeds their mean
    per_entry = GLCMLoss(levels=8, entries="mean")(smooth, x)
    torch.testing.assert_close(per_entry * 8 * 4, value)  # 8 angles x 4 tiles


def test_volumes_are_read_slice_by_slice() -> None:
    vol = torch.rand(1, 1, 3, 20, 20)
    feats = texture_features(vol, levels=4, patch_size=10, value_range=(0.0, 1.0))
    assert feats.shape == (1, 5, 8, 3, 2, 2)
    torch.testing.assert_close(feats[:, :, :, 1], texture_features(vol[:, :, 1], levels=4, patch_size=10,
                                                                   value_range=(0.0, 1.0)))


def test_grayscale() -> None:
    rgb = torch.rand(2, 3, 4, 4)
    gray = to_grayscale(rgb)
    torch.testing.assert_close(gray[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert to_grayscale(gray) is gray
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_grayscale(torch.rand(1, 2, 4, 4))


@pytest.mark.parametrize("kwargs,match", [
    ({"distance": 20}, "distance 20 must be smaller than the patch"),
    ({"distance": 25, "patch_size": 20}, "distance"),
    ({"patch_size": 64}, "larger than the image"),
    ({"kernel": "box"}, "kernel"),
    ({"levels": 1}, "levels"),
    ({"bandwidth": 0.0}, "bandwidth"),
    ({"value_range": (1.0, 0.0)}, "value_range"),
])
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        glcm(torch.rand(1, 1, 32, 32), **kwargs)


def test_bad_loss_options_are_named() -> None:
    with pytest.raises(ValueError, match="reduction"):
        GLCMLoss(reduction="sum")
    with pytest.raises(ValueError, match="homogeneity"):
        GLCMLoss(homogeneity="haralick")
    with pytest.raises(ValueError, match="shape"):
        GLCMLoss()(torch.rand(1, 1, 20, 20), torch.rand(1, 1, 24, 24))
