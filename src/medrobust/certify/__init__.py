"""medrobust.certify: certified L2 robustness by randomized smoothing, radii in the user's units.

``Smoothed(model, sigma, unit="HU", imap=...)`` wraps any classifier or segmenter;
``certify(x, n0, n, alpha)`` returns a :class:`ClassCertificate` (Cohen et al. 2019: the
certified class or :data:`ABSTAIN`, and its radius) or a :class:`SegCertificate`
(Fischer et al. 2021, SegCertify: certified label map with :data:`ABSTAIN` = -1, per-voxel
radius map, certified Dice per class at radii, abstain rate). :func:`write_certificate_maps`
writes a segmenter's maps as NIfTI in the case's geometry.
"""
from __future__ import annotations

from medrobust.certify.bounds import CORRECTIONS, lower_confidence_bound, radius, reject
from medrobust.certify.classification import ABSTAIN, ClassCertificate, certified_fraction
from medrobust.certify.outputs import write_certificate_maps
from medrobust.certify.segmentation import SegCertificate
from medrobust.certify.smoothing import Certificate, Smoothed, check_settings

__all__ = ["ABSTAIN", "CORRECTIONS", "Certificate", "ClassCertificate", "SegCertificate", "Smoothed",
           "certified_fraction", "check_settings", "lower_confidence_bound", "radius", "reject",
           "write_certificate_maps"]
