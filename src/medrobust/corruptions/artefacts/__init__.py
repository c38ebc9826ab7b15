"""The eight corruptions as TorchIO transforms with fixed parameters, and the volume geometry.

Each ``apply_<name>(vol, geo, lv, rng, seed)`` takes a volume ``(C, X, Y, Z)`` float32 on
the CPU, already rescaled to its reference range (values mostly in [0, 1]), the
:class:`Geometry`, the severity's row of the table, a seeded ``numpy`` generator and the
derived seed; it returns the corrupted volume and the parameters it drew (JSON-ready).

Axes. MRI artefacts live in the acquisition frame: k-space is segmented along an in-plane
*phase-encoding* axis and motion is in-plane, so nothing is ever applied along the
through-plane (slice) axis (TorchIO's ``RandomMotion`` segments k-space along array axis 2,
which for axial stacks is the slice axis; here the phase axis is moved there first).
Resolution loss, in turn, acts *only* on the through-plane axis.
"""
from __future__ import annotations

from medrobust.corruptions.artefacts.blurring import apply_blur, apply_resolution
from medrobust.corruptions.artefacts.frame import ISOTROPY_TOLERANCE, Geometry, geometry
from medrobust.corruptions.artefacts.intensity import apply_bias_field, apply_gamma, apply_noise
from medrobust.corruptions.artefacts.kspace import apply_ghosting, apply_motion, apply_spike
from medrobust.corruptions.artefacts.registry import ARTEFACTS, Artefact

__all__ = ["ARTEFACTS", "Artefact", "Geometry", "ISOTROPY_TOLERANCE", "apply_bias_field", "apply_blur",
           "apply_gamma", "apply_ghosting", "apply_motion", "apply_noise", "apply_resolution", "apply_spike",
           "geometry"]
