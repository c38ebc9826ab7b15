"""How far a perturbation moved the image, per sample: SSIM and PSNR (MONAI), L-inf and L2 norms.

``x`` and ``x_adv`` are images ``(B, C, *spatial)`` in model units.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.metrics import PSNRMetric, SSIMMetric

from medrobust.units import IntensityMap


def _per_sample(metric: Callable[..., Any], x: torch.Tensor, x_adv: torch.Tensor,
                data_range: float | torch.Tensor) -> torch.Tensor:
    """Run a MONAI image metric per sample when data_range is per-sample, ``(B,)``."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    x, x_adv = x.detach().double().cpu(), x_adv.detach().double().cpu()
    rng = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1)
    if rng.numel() not in (1, x.shape[0]) or (rng <= 0).any():
        raise ValueError(f"data_range must be > 0, a float or one per sample, got {data_range}")
    if rng.numel() == 1:
        return metric(float(rng), reduction="none")(x_adv, x).reshape(x.shape[0])
    return torch.cat([metric(float(r), reduction="none")(x_adv[i:i + 1], x[i:i + 1]).reshape(1)
                      for i, r in enumerate(rng)])


def ssim(x: torch.Tensor, x_adv: torch.Tensor, data_range: float | torch.Tensor) -> torch.Tensor:
    """Structural similarity per sample ``(B,)`` (1 = identical), 2D or 3D, mean over channels.

    The Gaussian window is 11 voxels, or the largest odd size that fits the smallest axis.
    ``data_range``: width of the intensity range in model units (float or ``(B,)``).

    Args:
        x: clean images in model units.
        x_adv: perturbed (or corrupted) images, same shape.
        data_range: width of the intensity range (> 0), float or per-sample ``(B,)``.

    Returns:
        float32 tensor on the CPU, SSIM per sample.

    Raises:
        ValueError: shapes differ, a spatial axis is shorter than 3 voxels, or
            ``data_range`` is not > 0 with 1 or B entries.

    Shape:
        - x, x_adv: ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        - data_range: float or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import ssim
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
        >>> [round(v, 2) for v in ssim(x, x_adv, data_range=1.0).tolist()]
        [0.98, 0.99]
        >>> ssim(x, x, data_range=1.0).tolist()
        [1.0, 1.0]
    """
    side = min(11, min(x.shape[2:]))
    win = side if side % 2 else side - 1
    if win < 3:
        raise ValueError(f"ssim needs every spatial axis >= 3 voxels, got shape {tuple(x.shape)}")

    def metric(rng: float, reduction: str) -> SSIMMetric:
        return SSIMMetric(spatial_dims=x.ndim - 2, data_range=rng, win_size=win, reduction=reduction)

    return _per_sample(metric, x, x_adv, data_range).float()


def psnr(x: torch.Tensor, x_adv: torch.Tensor, data_range: float | torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample ``(B,)``; ``inf`` for identical images.

    Args:
        x: clean images in model units.
        x_adv: perturbed (or corrupted) images, same shape.
        data_range: width of the intensity range (> 0), float or per-sample ``(B,)``.

    Returns:
        float32 tensor on the CPU, PSNR per sample in dB.

    Raises:
        ValueError: shapes differ, or ``data_range`` is not > 0 with 1 or B entries.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - data_range: float or ``(B,)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import psnr
        >>> x = torch.zeros(2, 1, 8, 8)
        >>> [round(v, 2) for v in psnr(x, x + 0.1, data_range=1.0).tolist()]   # 10 log10(1 / 0.01)
        [20.0, 20.0]
        >>> psnr(x, x, data_range=1.0).tolist()
        [inf, inf]
    """
    return _per_sample(PSNRMetric, x, x_adv, data_range).float()


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor,
                       intensity: IntensityMap | None = None) -> dict[str, torch.Tensor]:
    """L-inf and L2 norms of ``x_adv - x`` per sample, float64 ``(B,)`` each.

    Keys ``linf_model``, ``l2_model`` (model units) and ``linf_raw``, ``l2_raw`` (raw units,
    e.g. HU, via ``intensity.model_delta_to_raw``; per-sample scales allowed). Without an
    IntensityMap the raw norms equal the model norms.

    Args:
        x: clean images in model units.
        x_adv: perturbed images, same shape.
        intensity: the IntensityMap of the data, for the raw-unit norms (optional).

    Returns:
        Dict of four float64 CPU tensors ``(B,)``: ``linf_model``, ``l2_model``,
        ``linf_raw``, ``l2_raw``.

    Raises:
        ValueError: ``x`` and ``x_adv`` differ in shape.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - output values: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import perturbation_norms
        >>> from medrobust.units import IntensityMap
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> norms = perturbation_norms(x, x + 0.02, IntensityMap.ct_window(-175, 250))
        >>> {k: round(float(v[0]), 2) for k, v in norms.items()}   # 0.02 of a 425 HU window
        {'linf_model': 0.02, 'l2_model': 0.08, 'linf_raw': 8.5, 'l2_raw': 34.0}
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} differ in shape")
    delta = (x_adv.detach().double() - x.detach().double()).reshape(x.shape[0], -1).cpu()
    linf, l2 = delta.abs().amax(dim=1), delta.norm(p=2, dim=1)
    to_raw = intensity.model_delta_to_raw if intensity is not None else (lambda v: v)
    return {"linf_model": linf, "l2_model": l2, "linf_raw": to_raw(linf), "l2_raw": to_raw(l2)}
