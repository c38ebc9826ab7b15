"""Graded, reproducible acquisition corruptions on TorchIO (design.md section 6; seed 003).

``corrupt(image, name, severity, seed=..., affine=..., case_id=...)`` returns the corrupted
image and a JSON-ready record of every parameter (table values and random draws).

Units. The image is a tensor ``(C, *spatial)`` (2D or 3D) in any affine intensity unit
(model or raw). It is rescaled to ``u = (x - lo) / (hi - lo)`` with the reference range
[lo, hi] (``value_range`` if given, else the IntensityMap's clip window, else each
channel's own min..max), corrupted there and mapped back (then clipped to the map's clip
window, as the data pipeline would). Since every intensity map is affine, corrupting model
units or raw units gives the same image for the same reference range; strengths
(noise std, bias gain, spike and ghost intensity) are therefore fractions of the range
and mean the same on CT and MRI. The parameters per severity are in
:data:`SEVERITY_TABLE` (documented in :mod:`medrobust.corruptions.table`).

Geometry. 2D images are treated as one slice ``(C, H, W, 1)``; 3D images carry the case's
affine so spacings (mm) are right, and the through-plane axis (declared, or the largest
spacing) is never treated as an in-plane one (see :mod:`medrobust.corruptions.artefacts`).

Determinism. Draws come from a generator seeded with ``corruption_seed(seed, case_id,
name)``; the global torch RNG is left untouched (TorchIO runs inside ``fork_rng``).

Example:
    >>> import torch
    >>> from medrobust.corruptions import corrupt, level
    >>> level("blur", 2)
    {'sigma_voxels': 0.75}
    >>> out, params = corrupt(torch.rand(1, 16, 16, 16), "blur", 2, seed=0, case_id="case1")
    >>> out.shape, params["drawn"]
    (torch.Size([1, 16, 16, 16]), {'std_mm': [0.75, 0.75, 0.0]})
"""
from __future__ import annotations

from typing import Any

from medrobust.corruptions.table import (
    CORRUPTION_NAMES,
    SEVERITIES,
    SEVERITY_TABLE,
    check_name,
    check_severity,
    corruption_seed,
    level,
)

__all__ = ["CORRUPTION_NAMES", "SEVERITIES", "SEVERITY_TABLE", "check_name", "check_severity", "corrupt",
           "corruption_seed", "level"]


def __getattr__(name: str) -> Any:
    if name == "corrupt":  # lazy: TorchIO (and SimpleITK) load only when an image is corrupted
        from medrobust.corruptions.apply import corrupt
        return corrupt
    raise AttributeError(f"module 'medrobust.corruptions' has no attribute {name!r}")
