"""``budget_for_case``: the budget of a batch of cases, its valid range from the map's clip or each case."""
from __future__ import annotations

import torch

from medrobust.units.budget import NORMS, Budget
from medrobust.units.intensity import IntensityMap
from medrobust.units.tensors import Scalar


def budget_for_case(norm: str, eps: Scalar, unit: str, x: torch.Tensor,
                    intensity: IntensityMap | None) -> Budget:
    """The budget for a batch ``x`` (B, C, *spatial) of cases normalised by ``intensity``.

    The valid range is the map's clip when it has one (CT window, min-max). Z-scored data
    is never clipped to [0, 1]; its valid range is each case's own intensity range in model
    units (per-sample tensors), so a perturbation never invents intensities the scan does
    not contain and "1/255" stays meaningful.

    Args:
        norm: "linf" or "l2".
        eps: the radius (>= 0) in ``unit``, float or ``(B,)``.
        unit: one of "model", "raw", "HU", "1/255".
        x: the batch in model units (only its per-case min and max are read).
        intensity: the IntensityMap the data pipeline applied, or None.

    Returns:
        The Budget; with per-case ranges its ``eps``, ``low`` and ``high`` are ``(B,)``.

    Raises:
        ValueError: unknown ``norm`` or ``unit``, or a conversion that lacks what it needs.

    Shape:
        - x: ``(B, C, *spatial)``

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap, budget_for_case
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(2, 1, 4, 4)   # z-scored: each case keeps its own range
        >>> budget = budget_for_case("linf", 8, "1/255", x, IntensityMap.z_score(0.0, 1.0))
        >>> tuple(budget.eps.shape), bool((budget.low == x.flatten(1).amin(1)).all())
        ((2,), True)
        >>> ct = IntensityMap.ct_window(-175, 250)   # clipped: the window is the range
        >>> budget = budget_for_case("l2", 17, "HU", x, ct)
        >>> round(float(budget.eps), 4), float(budget.low), float(budget.high)
        (0.04, 0.0, 1.0)
    """
    if intensity is not None and intensity.clip is not None:
        valid: tuple[Scalar, Scalar] = intensity.clip
    else:
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        low = flat.amin(dim=1)
        valid = (low, torch.maximum(flat.amax(dim=1), low + 1e-6))  # a constant case keeps a tiny range
    make = Budget.linf if norm == "linf" else Budget.l2 if norm == "l2" else None
    if make is None:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    return make(eps, unit=unit, valid_range=valid, intensity=intensity)
