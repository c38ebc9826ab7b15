"""``to_model_units``: a size (eps, step size, noise std) stated in the user's unit, in model units."""
from __future__ import annotations

from typing import Literal

import torch

from medrobust.units.intensity import IntensityMap
from medrobust.units.tensors import Scalar, _as_tensor

Unit = Literal["model", "raw", "HU", "1/255"]
UNITS: tuple[str, ...] = ("model", "raw", "HU", "1/255")


def to_model_units(value: Scalar, unit: str, *, intensity: IntensityMap | None,
                   valid_range: tuple[torch.Tensor, torch.Tensor] | None, what: str = "eps") -> torch.Tensor:
    """Convert a size (eps, step size, noise std) stated in ``unit`` into model units.

    Returns a float64 tensor, scalar or ``(B,)`` for per-sample intensity maps or ranges.
    ``"1/255"`` means value/255 of the valid range's width (requires a finite range).

    Args:
        value: the size (>= 0), float or per-sample tensor ``(B,)``.
        unit: "model" (returned as is), "raw" or "HU" (divided by the map's scale; "HU"
            needs a map whose ``raw_unit`` is "HU"), or "1/255" (of the range's width).
        intensity: the IntensityMap of the data; needed for "raw" and "HU".
        valid_range: (low, high) in model units, scalars or ``(B,)``; needed for "1/255".
        what: the quantity's name, used in error messages.

    Returns:
        float64 tensor in model units, scalar or ``(B,)``.

    Raises:
        ValueError: ``value`` negative or not finite, unknown ``unit``, or the map or
            finite range the unit needs is missing.

    Shape:
        - value: ``()`` or ``(B,)``
        - output: ``()`` or ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap, to_model_units
        >>> rng = (torch.tensor(0.0), torch.tensor(1.0))
        >>> round(float(to_model_units(8, "1/255", intensity=None, valid_range=rng)), 4)
        0.0314
        >>> imap = IntensityMap.ct_window(-175, 250)
        >>> round(float(to_model_units(42.5, "HU", intensity=imap, valid_range=None)), 4)
        0.1
    """
    v = _as_tensor(value, what)
    if (v < 0).any():
        raise ValueError(f"{what} must be >= 0, got {value}")
    if unit == "model":
        return v
    if unit in ("raw", "HU"):
        if intensity is None:
            raise ValueError(f"{what} in unit {unit!r} needs an IntensityMap (intensity=...) to convert to model units")
        if unit == "HU" and intensity.raw_unit != "HU":
            raise ValueError(f"{what} in 'HU' but the IntensityMap's raw unit is {intensity.raw_unit!r}; use unit='raw'")
        return intensity.raw_delta_to_model(v)
    if unit == "1/255":
        if valid_range is None:
            raise ValueError(f"{what} in unit '1/255' needs a finite valid_range")
        lo, hi = valid_range
        width = hi - lo
        if not torch.isfinite(width).all():
            raise ValueError(f"{what} in unit '1/255' needs a finite valid_range, got ({lo}, {hi})")
        return v * width / 255.0
    raise ValueError(f"unknown unit {unit!r} for {what}; allowed: {', '.join(UNITS)}")
