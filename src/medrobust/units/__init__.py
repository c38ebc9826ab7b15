"""Threat model and intensity units: ``IntensityMap`` and ``Budget`` (design.md section 4).

Budgets are stated in the units a user thinks in (Hounsfield units, raw MRI intensity,
z-score units, or "eps/255 of the valid range" as the papers write it) and converted
once into **model units**, the units of the tensor the network sees.

Conventions
-----------
- ``x_model = (x_raw - offset) / scale``, optionally clipped to ``clip`` (model units).
- ``offset`` and ``scale`` are floats, or tensors of shape ``(B,)`` for per-sample
  normalisation (z-scored MRI); every converted quantity then has shape ``(B,)``.
- A ``Budget`` holds ``eps`` and the valid range in model units as tensors of shape
  ``(B,)`` (or scalars broadcast to any batch) and the norm (``"linf"`` or ``"l2"``).

Modules: ``tensors`` (the ``Scalar`` type, ``per_sample``, ``expand_to``), ``intensity``
(``IntensityMap``), ``conversion`` (``to_model_units``), ``budget`` (``Budget``) and
``cases`` (``budget_for_case``); this package re-exports their public names.
"""
from __future__ import annotations

from medrobust.units.budget import NORMS, Budget, Norm
from medrobust.units.cases import budget_for_case
from medrobust.units.conversion import UNITS, Unit, to_model_units
from medrobust.units.intensity import IntensityMap
from medrobust.units.tensors import Number, Scalar, expand_to, per_sample

__all__ = ["Budget", "IntensityMap", "NORMS", "Norm", "Number", "Scalar", "UNITS", "Unit", "budget_for_case",
           "expand_to", "per_sample", "to_model_units"]
