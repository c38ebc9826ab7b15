"""``corrupt``: one image, one corruption, one severity (see the package docstring)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medrobust.corruptions.artefacts import ARTEFACTS, geometry
from medrobust.corruptions.table import check_name, check_severity, corruption_seed, level
from medrobust.units import IntensityMap


def reference_range(x: torch.Tensor, intensity: IntensityMap | None,
                     value_range: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The reference range of the strengths: (lo, hi) shaped (C, 1, ..., 1) float64, and its source.

    Args:
        x: the image ``(C, *spatial)``.
        intensity: its IntensityMap (the clip window, if any, is the range).
        value_range: an explicit (low, high), first choice.

    Returns:
        ``(lo, hi, source)``; without a window, each channel's min..max.

    Raises:
        ValueError: ``value_range`` not (low, high) with low < high.
    """
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if value_range is not None:
        lo_v, hi_v = (float(v) for v in value_range)
        if not (np.isfinite([lo_v, hi_v]).all() and hi_v > lo_v):
            raise ValueError(f"value_range: expected (low, high) with low < high, got {value_range!r}")
        return torch.full(shape, lo_v, dtype=torch.float64), torch.full(shape, hi_v, dtype=torch.float64), "value_range"
    if intensity is not None and intensity.clip is not None:
        lo_c, hi_c = intensity.clip
        return (torch.full(shape, float(lo_c), dtype=torch.float64), torch.full(shape, float(hi_c), dtype=torch.float64),
                "intensity clip window")
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(dim=1)
    hi = torch.maximum(flat.amax(dim=1), lo + 1e-6)  # a constant channel keeps a tiny range
    return lo.reshape(shape), hi.reshape(shape), "min..max of each channel"


def corrupt(image: torch.Tensor, name: str, severity: int, *, seed: int = 0, affine: Any = None, case_id: str = "",
            intensity: IntensityMap | None = None, value_range: tuple[float, float] | None = None,
            through_plane: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Corrupt one image with ``name`` at ``severity`` (1-5).

    Args:
        image: float tensor ``(C, H, W)`` or ``(C, X, Y, Z)``, any device; values finite.
        name: one of :data:`CORRUPTION_NAMES`.
        severity: integer 1-5 (rows of :data:`SEVERITY_TABLE`).
        seed: the run's seed; with ``case_id`` and ``name`` it fixes every random draw (the
            same at every severity).
        case_id: the case id.
        affine: (4, 4) voxel-to-world matrix in mm of the image's grid (tensor or array);
            None means 1 mm voxels.
        intensity: the IntensityMap of ``image`` (its clip window is the reference range
            and the output is clipped to it).
        value_range: explicit reference range (low, high) in the image's units.
        through_plane: the slice axis (0-2) of a 3D image, if not the largest spacing.

    Returns:
        ``(corrupted, params)``: the corrupted image, same shape, dtype and device as
        ``image``; and a JSON-ready dict of the table values, the draws, the seeds, the axes
        and the reference range.

    Raises:
        ValueError: unknown ``name``, ``severity`` outside 1-5, bad ``image`` shape or
            values, bad ``affine``, ``value_range`` or ``through_plane``.

    Shape:
        - image: ``(C, H, W)`` (2D) or ``(C, X, Y, Z)`` (3D); no batch axis
        - affine: ``(4, 4)``
        - output: same as ``image``

    Example:
        >>> import json
        >>> import torch
        >>> from medrobust.corruptions import corrupt
        >>> from medrobust.units import IntensityMap
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(1, 16, 16, 16)
        >>> out, params = corrupt(x, "noise", 3, seed=0, case_id="case1")
        >>> out.shape, params["std_fraction"], params["reference_range"]["source"]
        (torch.Size([1, 16, 16, 16]), 0.06, 'min..max of each channel')
        >>> torch.equal(out, corrupt(x, "noise", 3, seed=0, case_id="case1")[0])   # reproducible
        True
        >>> stronger, _ = corrupt(x, "noise", 5, seed=0, case_id="case1")
        >>> bool((stronger - x).std() > (out - x).std())
        True
        >>> out, params = corrupt(x, "gamma", 2, intensity=IntensityMap.ct_window(-175, 250))
        >>> params["reference_range"], bool(out.min() >= 0 and out.max() <= 1)
        ({'low': [0.0], 'high': [1.0], 'source': 'intensity clip window'}, True)
        >>> out, params = corrupt(torch.rand(1, 32, 32), "blur", 1)   # 2D: one slice
        >>> out.shape, params["through_plane_axis"], params["drawn"]
        (torch.Size([1, 32, 32]), None, {'std_mm': [0.5, 0.5, 0.0]})
        >>> isinstance(json.dumps(params), str)
        True
    """
    name, severity = check_name(name, "name"), check_severity(severity, "severity")
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.ndim not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a float tensor (C, H, W) or (C, X, Y, Z), got {shape}")
    if not torch.isfinite(image).all():
        raise ValueError("image: holds NaN or Inf values; intensities must be finite")
    is_2d = image.ndim == 3
    if is_2d and through_plane is not None:
        raise ValueError("through_plane: a 2D image is a single slice; its through-plane axis is implicit")
    x = image.detach().to("cpu", torch.float64)
    lo, hi, source = reference_range(x, intensity, value_range)
    unit = ((x - lo) / (hi - lo)).float()
    volume = unit.unsqueeze(-1) if is_2d else unit
    geo = geometry(tuple(volume.shape[1:]), affine, through_plane)  # type: ignore[arg-type]
    derived = corruption_seed(seed, case_id, name)
    table = level(name, severity)
    with torch.random.fork_rng(devices=[]):  # TorchIO's transforms draw from the global RNG (probability p)
        out, drawn = ARTEFACTS[name](volume, geo, table, np.random.default_rng(derived), derived)
    result = lo + (out[..., 0] if is_2d else out).double() * (hi - lo)
    if intensity is not None and intensity.clip is not None:
        result = result.clamp(*intensity.clip)
    params = {"corruption": name, "severity": severity, "seed": int(seed), "case_id": str(case_id),
              "derived_seed": derived, **table, "drawn": drawn,
              "through_plane_axis": None if is_2d else geo.through,
              "through_plane_reason": "2D image (one slice)" if is_2d else geo.reason,
              "spacing_mm": list(geo.spacing[:2] if is_2d else geo.spacing),
              "reference_range": {"low": lo.reshape(-1).tolist(), "high": hi.reshape(-1).tolist(), "source": source}}
    return result.to(device=image.device, dtype=image.dtype), params
