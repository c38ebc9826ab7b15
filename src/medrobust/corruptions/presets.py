"""Corruption presets: a published corrupted test set's TorchIO transforms, seeded.

``acdc-c`` is seed 003's ACDC-C (``medseg/dataset_loader/generate_artefacted_data.py`` of the
cooperative-training code): TorchIO's ``RandomMotion(degrees=30, translation=10)`` (2
movements), ``RandomSpike()`` (one spike, intensity 1-3; ``num_spikes=(1, 1)``, today's TorchIO default: the
seed's ``1`` parses to 0 or 1 spikes in TorchIO 1.x), ``RandomGhosting()`` (4-10 ghosts,
intensity 0.5-1, along any axis) and ``RandomBiasField()`` (coefficients 0.5, order 3), with
TorchIO's defaults of then written out. As there, the transform sees the stack of slices
``(C, slices, H, W)`` with a 1 mm identity affine (translations are in voxels) and every
output slice is min-max rescaled onto the range of its input slice (the seed normalises
each slice to [0, 1] before and after). Unlike the graded corruptions
(:data:`medrobust.corruptions.SEVERITY_TABLE`), the strength is drawn per case: this is the
benchmark's distribution, not a severity scale; severity 5 of each of the four reaches at
least its mean strength (``tests/test_corruption_presets.py``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchio as tio

from medrobust.corruptions.apply import reference_range
from medrobust.corruptions.artefacts import geometry
from medrobust.corruptions.table import corruption_seed
from medrobust.units import IntensityMap

__all__ = ["PRESETS", "corrupt_preset"]

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "acdc-c": {
        "motion": {"degrees": 30.0, "translation": 10.0, "num_transforms": 2},
        "spike": {"num_spikes": (1, 1), "intensity": (1.0, 3.0)},
        "ghosting": {"num_ghosts": (4, 10), "intensity": (0.5, 1.0)},
        "bias_field": {"coefficients": 0.5, "order": 3},
    },
}
_TRANSFORMS: dict[str, type[tio.Transform]] = {"motion": tio.RandomMotion, "spike": tio.RandomSpike,
                                               "ghosting": tio.RandomGhosting, "bias_field": tio.RandomBiasField}


def _json(value: Any) -> Any:
    """TorchIO's applied arguments (per-image dicts, numpy values) as JSON-ready values."""
    if isinstance(value, dict):
        return _json(value["img"]) if set(value) == {"img"} else {k: _json(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _slices_onto(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Each slice ``out[:, i]`` min-max mapped onto the range of ``ref[:, i]``."""
    dims = (2, 3)
    lo, hi = out.amin(dims, keepdim=True), out.amax(dims, keepdim=True)
    ref_lo, ref_hi = ref.amin(dims, keepdim=True), ref.amax(dims, keepdim=True)
    return ref_lo + (out - lo) / (hi - lo).clamp_min(1e-12) * (ref_hi - ref_lo)


def _check(preset: str, name: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown corruption preset {preset!r}; allowed: {', '.join(PRESETS)}")
    if name not in PRESETS[preset]:
        raise ValueError(f"name: preset {preset!r} has {', '.join(PRESETS[preset])}, got {name!r}")
    return PRESETS[preset][name]


def corrupt_preset(image: torch.Tensor, preset: str, name: str, *, seed: int = 0, affine: Any = None,
                   case_id: str = "", intensity: IntensityMap | None = None,
                   value_range: tuple[float, float] | None = None,
                   through_plane: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Corrupt one volume with corruption ``name`` of ``preset``, drawn as the benchmark does.

    Args:
        image: float tensor ``(C, X, Y, Z)``, any device; values finite.
        preset: one of :data:`PRESETS` ("acdc-c").
        name: one of the preset's corruptions ("motion", "spike", "ghosting", "bias_field").
        seed: the run's seed; with ``case_id``, ``preset`` and ``name`` it fixes the draw.
        case_id: the case id.
        affine: (4, 4) voxel-to-world matrix (mm); only its spacings are used, to find the
            slice axis.
        intensity: the IntensityMap of ``image`` (its clip window is the reference range
            and the output is clipped to it).
        value_range: explicit reference range (low, high) in the image's units.
        through_plane: the slice axis (0-2), if not the largest spacing.

    Returns:
        ``(corrupted, params)``: same shape, dtype and device as ``image``; and a JSON-ready
        dict of the preset, its transform's ranges and the drawn arguments.

    Raises:
        ValueError: unknown ``preset`` or ``name``, an image that is not a finite 3D
            ``(C, X, Y, Z)`` float tensor, a bad ``affine``, ``value_range`` or ``through_plane``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> out, params = corrupt_preset(torch.rand(1, 16, 16, 6), "acdc-c", "spike", seed=0, case_id="c")
        >>> out.shape, params["transform"], 1 <= params["drawn"]["intensity"] <= 3
        (torch.Size([1, 16, 16, 6]), 'RandomSpike', True)
    """
    ranges = _check(preset, name)
    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.ndim != 4:
        raise ValueError(f"image: a preset corrupts volumes (C, X, Y, Z), got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    if not torch.isfinite(image).all():
        raise ValueError("image: holds NaN or Inf values; intensities must be finite")
    x = image.detach().to("cpu", torch.float64)
    lo, hi, source = reference_range(x, intensity, value_range)
    geo = geometry(tuple(x.shape[1:]), affine, through_plane)  # type: ignore[arg-type]
    order = (geo.through, *geo.in_plane)  # the seed's (slices, H, W)
    stack = ((x - lo) / (hi - lo)).float().permute(0, *(a + 1 for a in order)).contiguous()
    derived = corruption_seed(seed, case_id, f"{preset}/{name}")
    with torch.random.fork_rng(devices=[]):  # TorchIO draws from the global RNG
        torch.manual_seed(derived)
        done = _TRANSFORMS[name](**ranges)(tio.Subject(img=tio.ScalarImage(tensor=stack)))
    applied, corrupted = done.get_applied_transforms()[-1], done["img"]
    assert isinstance(corrupted, tio.ScalarImage)
    out = _slices_onto(corrupted.data.double(), stack.double())
    result = lo + out.permute(0, *(order.index(a) + 1 for a in range(3))) * (hi - lo)
    if intensity is not None and intensity.clip is not None:
        result = result.clamp(*intensity.clip)
    params = {"preset": preset, "corruption": name, "seed": int(seed), "case_id": str(case_id),
              "derived_seed": derived, "transform": _TRANSFORMS[name].__name__,
              "ranges": _json(ranges), "drawn": {k: _json(getattr(applied, k)) for k in applied.args_names},
              "through_plane_axis": geo.through, "through_plane_reason": geo.reason,
              "reference_range": {"low": lo.reshape(-1).tolist(), "high": hi.reshape(-1).tolist(), "source": source}}
    return result.to(device=image.device, dtype=image.dtype), params
