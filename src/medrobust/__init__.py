"""medrobust: attack, harden and evaluate medical-image models.

Public names (design.md): ``Budget``, ``IntensityMap`` (units), ``build_model``,
``SlidingWindow``, ``Ensemble`` (models), the attacks ``FGSM``, ``BIM``, ``PGD``, ``MIFGSM``,
``APGD``, ``Square``, ``GaussianNoise``, ``VAFA`` (attacks).

They are imported on first use, so ``import medrobust`` (and with it every command line
start and every ``medrobust.<module>`` import) stays light: torch, MONAI and the attacks
load only when a name that needs them is read.

Example:
    >>> import torch
    >>> import medrobust
    >>> x, y = torch.full((1, 1, 4, 4), 0.5), torch.zeros(1, 1, 4, 4, dtype=torch.long)
    >>> x_adv = medrobust.FGSM(medrobust.Budget.linf(0.1))(torch.nn.Conv2d(1, 2, 1), x, y)
    >>> round(float((x_adv - x).abs().max()), 4)  # one step of size eps
    0.1
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Budget": "medrobust.units", "IntensityMap": "medrobust.units",
    "build_model": "medrobust.models", "SlidingWindow": "medrobust.models", "Ensemble": "medrobust.models",
    **{name: "medrobust.attacks" for name in ("FGSM", "BIM", "PGD", "MIFGSM", "APGD", "Square", "GaussianNoise",
                                              "VAFA")},
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    """The public names, imported from their module on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medrobust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
