"""The eight artefacts by corruption name: :data:`ARTEFACTS` maps each to its ``apply_<name>``.

Every one has the signature :data:`Artefact`: ``(vol, geo, lv, rng, seed) -> (corrupted
volume, drawn parameters)``, with these arguments, result and shapes:

Args:
    vol: the volume rescaled to its reference range, float32 on the CPU.
    geo: its :class:`~medrobust.corruptions.artefacts.frame.Geometry` (slice axis, in-plane
        axes, spacing).
    lv: the severity's row of the table, ``level(name, severity)``.
    rng: the seeded generator of the case's draws.
    seed: the derived seed (for TorchIO transforms that draw from torch).

Returns:
    (corrupted volume float32 of the same shape, the drawn parameters as a JSON-ready dict).

Shape:
    - vol: ``(C, X, Y, Z)`` (a 2D image is ``(C, H, W, 1)``)
    - output: ``(C, X, Y, Z)``
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medrobust.corruptions.artefacts.blurring import apply_blur, apply_resolution
from medrobust.corruptions.artefacts.frame import Geometry
from medrobust.corruptions.artefacts.intensity import apply_bias_field, apply_gamma, apply_noise
from medrobust.corruptions.artefacts.kspace import apply_ghosting, apply_motion, apply_spike

__all__ = ["ARTEFACTS", "Artefact"]

Artefact = Callable[[torch.Tensor, Geometry, dict[str, float], np.random.Generator, int],
                    tuple[torch.Tensor, dict[str, Any]]]
ARTEFACTS: dict[str, Artefact] = {"motion": apply_motion, "spike": apply_spike, "ghosting": apply_ghosting,
                                  "bias_field": apply_bias_field, "blur": apply_blur, "noise": apply_noise,
                                  "gamma": apply_gamma, "resolution": apply_resolution}
