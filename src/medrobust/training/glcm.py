"""Differentiable grey-level co-occurrence matrices (GLCM), texture features and GLCMLoss.

Seed 004 restrains its texture and colour modules with a loss on second-order texture
features of GLCMs. scikit-image's ``graycomatrix`` counts integer pixel pairs and has no
gradient; here each pixel is spread over ``L`` grey levels by a soft kernel, so the matrix
and every feature are smooth functions of the intensities.

Definitions (tested against scikit-image on images already quantised to L levels):

- Intensities map to levels ``v = (x - lo) / (hi - lo) · (L - 1)`` in [0, L-1]; ``(lo, hi)``
  is ``value_range`` or, by default, each image's own min/max (so the features describe
  texture, not brightness or contrast). Soft one-hot weights per pixel ``w_k(v)``:
  "gaussian" ``softmax_k(-(v - k)² / 2h²)`` or "triangular" ``max(0, 1 - |v - k|/h)``
  renormalised (h = ``bandwidth`` in grey levels; triangular wants h >= 1 so that no
  intensity falls between kernels).
- Offsets: angle θ and distance d give ``(dr, dc) = (round(d·sin θ), round(d·cos θ))``
  (row, column), exactly what scikit-image computes (so θ = 90° pairs a pixel with the one
  d rows *below* it, although skimage's docstring says "above"; tested).
- ``P_θ[i, j] = Σ_p w_i(p) w_j(p + offset) / #pairs`` over the pixel pairs inside one
  patch (non-overlapping ``patch_size`` tiles from the top-left corner; the last
  ``H mod patch`` rows and columns are left out). Not symmetrised (skimage
  ``symmetric=False, normed=True``). ``P_{θ+180°} = P_θᵀ`` exactly, so each pair of opposite
  angles is computed once.
- Features (``FEATURES`` order): ASM ``Σ P²``; contrast ``Σ (i-j)² P``; homogeneity
  ``Σ P / (1 + |i-j|)`` (the slides, default) or ``Σ P / (1 + (i-j)²)`` (scikit-image,
  ``homogeneity="skimage"``); correlation ``Σ (i-μ_i)(j-μ_j) P / (σ_i σ_j)`` (1 where a
  standard deviation is ~0, as scikit-image); dissimilarity ``Σ |i-j| P``.
- Scaled features (``scaled=True``, what the loss uses) each span a range of length 1:
  contrast / (L-1)², dissimilarity / (L-1), correlation / 2; ASM and homogeneity are
  already in [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from typing_extensions import override

FEATURES = ("asm", "contrast", "homogeneity", "correlation", "dissimilarity")
DEFAULT_ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B

Kernel = Literal["gaussian", "triangular"]


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, *spatial)`` RGB -> ``(B, 1, *spatial)`` luma (BT.601); one channel passes through."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"to_grayscale: expected 1 or 3 channels, got shape {tuple(x.shape)}")
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, *([1] * (x.ndim - 2)))
    return (x * weights).sum(1, keepdim=True)


def angle_offsets(distance: int, angles: Sequence[float]) -> list[tuple[int, int]]:
    """(row, column) offset of each angle in degrees, scikit-image's convention."""
    return [(round(distance * math.sin(math.radians(a))), round(distance * math.cos(math.radians(a))))
            for a in angles]


def soft_levels(v: torch.Tensor, levels: int, bandwidth: float, kernel: Kernel) -> torch.Tensor:
    """Soft one-hot of level coordinates ``v`` (any shape, values in [0, L-1]) -> ``(*v.shape[:1], L, *v.shape[1:])``.

    The weights of each pixel are >= 0 and sum to 1 over the L levels.
    """
    centres = torch.arange(levels, dtype=v.dtype, device=v.device).view(1, levels, *([1] * (v.ndim - 1)))
    dist = v.unsqueeze(1) - centres
    if kernel == "gaussian":
        return torch.softmax(-dist.square() / (2.0 * bandwidth**2), dim=1)
    w = torch.relu(1.0 - dist.abs() / bandwidth)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


def _check(levels: int, distance: int, patch: tuple[int, int], size: tuple[int, int], bandwidth: float,
           kernel: str) -> None:
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if distance < 1:
        raise ValueError(f"distance must be >= 1 pixel, got {distance}")
    if distance >= min(patch):
        raise ValueError(f"GLCM distance {distance} must be smaller than the patch size {patch}: "
                         "no pixel pair would fit in a patch")
    if patch[0] > size[0] or patch[1] > size[1]:
        raise ValueError(f"patch_size {patch} is larger than the image {size}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0 grey levels, got {bandwidth}")
    if kernel not in ("gaussian", "triangular"):
        raise ValueError(f"kernel must be 'gaussian' or 'triangular', got {kernel!r}")


def _level_coordinates(x: torch.Tensor, levels: int, value_range: tuple[float, float] | None) -> torch.Tensor:
    """``(B, 1, *spatial)`` -> level coordinates in [0, L-1], same shape (range per sample or fixed)."""
    if value_range is None:
        flat = x.reshape(x.shape[0], -1)
        lo = flat.amin(1).view(-1, *([1] * (x.ndim - 1)))
        hi = flat.amax(1).view(-1, *([1] * (x.ndim - 1)))
    else:
        lo, hi = (torch.as_tensor(float(v), dtype=x.dtype, device=x.device) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        x = torch.minimum(torch.maximum(x, lo), hi)
    return (x - lo) / (hi - lo).clamp_min(1e-12) * (levels - 1)


def glcm(x: torch.Tensor, levels: int = 16, distance: int = 3, angles: Sequence[float] = DEFAULT_ANGLES,
         patch_size: int | tuple[int, int] | None = 20, value_range: tuple[float, float] | None = None,
         bandwidth: float = 0.5, kernel: Kernel = "gaussian") -> torch.Tensor:
    """Soft, normalised co-occurrence matrices per patch and angle.

    Args:
        x: ``(B, 1, H, W)`` grey images, or ``(B, 1, D, H, W)`` volumes (per slice along D).
        levels: L grey levels.
        distance: pixel distance d (< patch size).
        angles: degrees (default the 8 of the slides).
        patch_size: side of the square tiles (or (h, w)); None = the whole image.
        value_range: fixed (lo, hi) in x's units, or None for each sample's min/max.
        bandwidth: width of the soft binning, in grey levels.
        kernel: shape of the soft binning ("gaussian" or "triangular").

    Returns:
        ``(B, A, *grid, L, L)``, grid = (nh, nw) tiles (or (D, nh, nw)); each matrix sums to 1.
    """
    if x.ndim not in (4, 5) or x.shape[1] != 1:
        raise ValueError(f"glcm: expected (B, 1, H, W) or (B, 1, D, H, W), got shape {tuple(x.shape)}")
    size = (x.shape[-2], x.shape[-1])
    if patch_size is None:
        patch = size
    else:
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else (int(patch_size[0]), int(patch_size[1]))
    _check(levels, distance, patch, size, bandwidth, kernel)
    v = _level_coordinates(x, levels, value_range)
    grid_lead = tuple(x.shape[2:-2])  # (D,) for volumes
    nh, nw = size[0] // patch[0], size[1] // patch[1]
    v = v[..., :nh * patch[0], :nw * patch[1]].reshape(-1, nh, patch[0], nw, patch[1])
    tiles = v.permute(0, 1, 3, 2, 4).reshape(-1, patch[0], patch[1])  # (M, ph, pw)
    w = soft_levels(tiles, levels, bandwidth, kernel)  # (M, L, ph, pw)
    ph, pw = patch
    done: dict[tuple[int, int], torch.Tensor] = {}
    mats = []
    for dr, dc in angle_offsets(distance, angles):  # a loop over offsets only; tiles and pixels are batched
        if (-dr, -dc) in done:
            mats.append(done[(-dr, -dc)].transpose(-1, -2))
            continue
        r0, r1, c0, c1 = max(0, -dr), ph - max(0, dr), max(0, -dc), pw - max(0, dc)
        src = w[:, :, r0:r1, c0:c1].flatten(2)
        dst = w[:, :, r0 + dr:r1 + dr, c0 + dc:c1 + dc].flatten(2)
        mat = torch.bmm(src, dst.transpose(1, 2)) / src.shape[-1]
        done[(dr, dc)] = mat
        mats.append(mat)
    out = torch.stack(mats, 1)  # (M, A, L, L)
    out = out.reshape(x.shape[0], *grid_lead, nh, nw, len(mats), levels, levels)
    return out.movedim(-3, 1)


def glcm_features(p: torch.Tensor, homogeneity: Literal["slides", "skimage"] = "slides",
                  scaled: bool = False) -> torch.Tensor:
    """Texture features of normalised GLCMs ``(..., L, L)`` -> ``(..., 5)`` in ``FEATURES`` order."""
    if homogeneity not in ("slides", "skimage"):
        raise ValueError("homogeneity must be 'slides' (1/(1+|i-j|)) or 'skimage' (1/(1+(i-j)²)), "
                         f"got {homogeneity!r}")
    levels = p.shape[-1]
    idx = torch.arange(levels, dtype=p.dtype, device=p.device)
    i, j = idx.view(levels, 1), idx.view(1, levels)
    gap = (i - j).abs()
    asm = p.square().sum((-2, -1))
    contrast = (p * gap.square()).sum((-2, -1))
    homog = (p / (1.0 + (gap if homogeneity == "slides" else gap.square()))).sum((-2, -1))
    dissimilarity = (p * gap).sum((-2, -1))
    p_i, p_j = p.sum(-1), p.sum(-2)
    mu_i, mu_j = (p_i * idx).sum(-1), (p_j * idx).sum(-1)
    d_i, d_j = i - mu_i[..., None, None], j - mu_j[..., None, None]
    var_i, var_j = (p * d_i.square()).sum((-2, -1)), (p * d_j.square()).sum((-2, -1))
    cov = (p * d_i * d_j).sum((-2, -1))
    flat = (var_i < 1e-30) | (var_j < 1e-30)  # scikit-image: std < 1e-15 -> correlation 1
    corr = torch.where(flat, torch.ones_like(cov), cov / (var_i * var_j).clamp_min(1e-30).sqrt())
    if scaled:
        contrast, dissimilarity, corr = contrast / (levels - 1) ** 2, dissimilarity / (levels - 1), corr / 2.0
    return torch.stack([asm, contrast, homog, corr, dissimilarity], -1)


def texture_features(x: torch.Tensor, *, levels: int = 16, distance: int = 3,
                     angles: Sequence[float] = DEFAULT_ANGLES, patch_size: int | tuple[int, int] | None = 20,
                     value_range: tuple[float, float] | None = None, bandwidth: float = 0.5,
                     kernel: Kernel = "gaussian", homogeneity: Literal["slides", "skimage"] = "slides",
                     scaled: bool = True) -> torch.Tensor:
    """Second-order texture feature maps ``(B, 5, A, *grid)`` of grey images ``(B, 1, H, W)``.

    The slides' "SOT" matrix of an image is this tensor with rows = features (m = 5) and
    columns = every (angle, tile) entry (n = A · tiles). Arguments as :func:`glcm`.
    """
    p = glcm(x, levels, distance, angles, patch_size, value_range, bandwidth, kernel)
    return glcm_features(p, homogeneity, scaled).movedim(-1, 1)


class GLCMLoss(nn.Module):
    """Texture distortion between two grey images (seed 004).

    ``max_i Σ_j |SOT(x)_ij - SOT(target)_ij|`` over features i and entries j.

    Features are scaled to ranges of length 1 (see the module docstring), so no feature
    wins the max through its units alone.

    Args:
        reduction: "max" over the 5 features (the slides) or "mean" of them.
        entries: "sum" over the A · tiles entries (the slides; grows with the image area)
            or "mean" (independent of image size).
        other keywords: as :func:`texture_features`.
    Shapes:
        forward(x, target): both ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``) -> ``(B,)``.
    """

    def __init__(self, *, levels: int = 16, distance: int = 3, angles: Sequence[float] = DEFAULT_ANGLES,
                 patch_size: int | tuple[int, int] | None = 20, value_range: tuple[float, float] | None = None,
                 bandwidth: float = 0.5, kernel: Kernel = "gaussian",
                 homogeneity: Literal["slides", "skimage"] = "slides",
                 reduction: Literal["max", "mean"] = "max", entries: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        if reduction not in ("max", "mean"):
            raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
        if entries not in ("sum", "mean"):
            raise ValueError(f"entries must be 'sum' or 'mean', got {entries!r}")
        glcm_features(torch.full((1, 2, 2), 0.25), homogeneity)  # fail now on a bad homogeneity
        self.options: dict[str, Any] = {"levels": levels, "distance": distance, "angles": tuple(angles), "patch_size": patch_size,
                        "value_range": value_range, "bandwidth": bandwidth, "kernel": kernel,
                        "homogeneity": homogeneity}
        self.reduction, self.entries = reduction, entries

    @override
    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if x.shape != target.shape:
            raise ValueError(f"GLCMLoss: x {tuple(x.shape)} and target {tuple(target.shape)} differ in shape")
        diff = (texture_features(x, **self.options) - texture_features(target, **self.options)).abs()
        diff = diff.flatten(2)  # (B, 5, n)
        per_feature = diff.sum(-1) if self.entries == "sum" else diff.mean(-1)
        return per_feature.amax(1) if self.reduction == "max" else per_feature.mean(1)
