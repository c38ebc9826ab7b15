"""The intensity artefacts: a smooth multiplicative bias field, additive noise and a gamma contrast change.

Each acts voxel by voxel on the volume rescaled to its reference range, whatever the slice axis.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchio as tio

from medrobust.corruptions.artefacts.frame import Geometry, _run

__all__ = ["apply_bias_field", "apply_noise", "apply_gamma"]


def apply_bias_field(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                     seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Bias field: a smooth multiplicative field ``exp(p(x, y, z))`` (``tio.BiasField``).

    p is a polynomial of order 3, centred (geometric mean of the field 1) and scaled so
    max |p| = ``max_log_gain``.

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("bias_field", severity)``;
    ``seed`` is unused.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_bias_field, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_bias_field(vol, geo, level("bias_field", 3), np.random.default_rng(0), 0)
        >>> round(float((out / vol).log().abs().max()), 4)   # max_log_gain at severity 3
        1.0
        >>> drawn["order"], len(drawn["coefficients"])
        (3, 20)
    """
    order = 3
    coefficients = rng.uniform(-1, 1, (order + 1) * (order + 2) * (order + 3) // 6)
    coefficients[0] = 0.0  # constant term: set below so the field is centred
    log_field = np.log(tio.BiasField.generate_bias_field(vol, order, coefficients.tolist()).astype(np.float64))
    centre = log_field.mean()
    span = float(np.abs(log_field - centre).max()) or 1.0
    coefficients = coefficients * lv["max_log_gain"] / span
    coefficients[0] = -centre * lv["max_log_gain"] / span
    out = _run(tio.BiasField(coefficients=coefficients.tolist(), order=order), vol, geo.affine)
    return out, {"order": order, "coefficients": coefficients.tolist()}


def apply_noise(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Additive Gaussian noise, std a fraction of the reference range (``tio.Noise``, seeded).

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("noise", severity)``;
    ``seed`` seeds TorchIO's noise.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_noise, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_noise(vol, geo, level("noise", 3), np.random.default_rng(0), 0)
        >>> round(float((out - vol).std()), 2), drawn   # std_fraction 0.06 at severity 3
        (0.06, {'noise_seed': 0})
    """
    return _run(tio.Noise(mean=0.0, std=lv["std_fraction"], seed=seed), vol, geo.affine), {"noise_seed": seed}


def apply_gamma(vol: torch.Tensor, geo: Geometry, lv: dict[str, float], rng: np.random.Generator,
                seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Contrast change u -> u ** gamma on the rescaled image (``tio.Gamma``).

    Arguments, result and shapes as for
    :data:`~medrobust.corruptions.artefacts.registry.Artefact`, with ``lv = level("gamma", severity)``;
    ``seed`` is unused.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.corruptions.artefacts import apply_gamma, geometry
        >>> from medrobust.corruptions.table import level
        >>> _ = torch.manual_seed(0)
        >>> vol = torch.rand(1, 16, 16, 16)
        >>> geo = geometry((16, 16, 16), None, None)
        >>> out, drawn = apply_gamma(vol, geo, level("gamma", 3), np.random.default_rng(0), 0)
        >>> round(drawn["gamma"], 4)   # exp(+0.3) or exp(-0.3)
        1.3499
        >>> bool(torch.allclose(out, vol ** drawn["gamma"], atol=1e-5))
        True
    """
    gamma = float(np.exp(rng.choice([-1.0, 1.0]) * lv["log_gamma"]))
    return _run(tio.Gamma(gamma=gamma), vol, geo.affine), {"gamma": gamma}
