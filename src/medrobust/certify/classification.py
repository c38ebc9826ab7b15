"""Cohen et al.'s CERTIFY and PREDICT for one image, from Monte Carlo class counts.

The counts come from :class:`~medrobust.certify.sampling.NoiseCounter`: ``n0`` selection
samples pick the top class c_A, ``n`` independent estimation samples count its hits n_A,
and the one-sided Clopper-Pearson bound p_A at level 1 - alpha gives the radius
``sigma · Φ⁻¹(p_A)``; the smoothed classifier abstains (:data:`ABSTAIN`) when p_A ≤ 1/2.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from medrobust.certify.bounds import lower_confidence_bound, radius

ABSTAIN = -1  # the label of an abstention, in class certificates and in certified label maps


@dataclass(frozen=True)
class ClassCertificate:
    """The smoothed classifier's certified class of one image and its L2 radius.

    Attributes:
        label: the certified class index, or :data:`ABSTAIN` (-1).
        radius: certified L2 radius in ``unit`` (0 when abstaining): no perturbation of
            smaller L2 norm (in ``unit``) changes the smoothed prediction, with
            probability at least 1 - alpha over the sampling.
        radius_model: the same radius in model units.
        p_lower: the Clopper-Pearson lower bound on p_A.
        hits: n_A, the estimation samples that predicted the selected class.
        n0, n, alpha: the sampling settings.
        sigma, unit, sigma_model: the noise level as stated and in model units.
        seconds: wall time of the certification.

    Example:
        >>> from medrobust.certify.classification import certify_counts
        >>> import torch
        >>> cert = certify_counts(torch.tensor([2, 98]), torch.tensor([10, 990]), alpha=0.001,
        ...                       sigma=25.0, unit="HU", sigma_model=25 / 425)
        >>> cert.label, round(cert.radius, 2), cert.certified_correct(1, 40.0), cert.certified_correct(1, 60.0)
        (1, 49.45, True, False)
    """

    label: int
    radius: float
    radius_model: float
    p_lower: float
    hits: int
    n0: int
    n: int
    alpha: float
    sigma: float
    unit: str
    sigma_model: float
    seconds: float = 0.0

    @property
    def abstained(self) -> bool:
        """True when the smoothed classifier abstains."""
        return self.label == ABSTAIN

    def certified_correct(self, y: int, r: float) -> bool:
        """Whether the image counts for certified accuracy at radius ``r`` (in ``unit``).

        Args:
            y: the true class index.
            r: the radius (≥ 0) in the certificate's unit.

        Returns:
            True when the certified class is ``y`` and its radius is at least ``r``.
        """
        return not self.abstained and self.label == int(y) and self.radius >= r

    def to_dict(self) -> dict[str, Any]:
        """The certificate as a JSON-ready dict (one entry per attribute)."""
        return asdict(self)


def certify_counts(selection: torch.Tensor, estimation: torch.Tensor, *, alpha: float, sigma: float, unit: str,
                   sigma_model: float, seconds: float = 0.0) -> ClassCertificate:
    """CERTIFY from the selection and estimation counts of one image.

    Args:
        selection: class counts over the n0 selection samples ``(K,)``.
        estimation: class counts over the n estimation samples ``(K,)``.
        alpha: error level in (0, 1).
        sigma: noise level in ``unit``.
        sigma_model: the same in model units.
        unit: the unit radii are stated in.
        seconds: wall time to record.

    Returns:
        The :class:`ClassCertificate` (abstains when p_A ≤ 1/2).

    Shape:
        - selection, estimation: ``(K,)``

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from medrobust.certify.classification import certify_counts
        >>> certify_counts(torch.tensor([5, 5]), torch.tensor([50, 50]), alpha=0.01, sigma=1.0, unit="model",
        ...                sigma_model=1.0).label
        -1
    """
    top = int(selection.argmax())
    n0, n, hits = int(selection.sum()), int(estimation.sum()), int(estimation[top])
    p_lower = float(lower_confidence_bound(hits, n, alpha))
    r = float(radius(p_lower, sigma))
    return ClassCertificate(label=top if p_lower > 0.5 else ABSTAIN, radius=r,
                            radius_model=float(radius(p_lower, sigma_model)), p_lower=p_lower, hits=hits, n0=n0, n=n,
                            alpha=alpha, sigma=sigma, unit=unit, sigma_model=sigma_model, seconds=seconds)


def certified_fraction(radii: np.ndarray | list[float], correct: np.ndarray | list[bool],
                       grid: list[float]) -> list[float]:
    """Certified accuracy at each radius of ``grid``: the fraction correct with radius ≥ r.

    Args:
        radii: certified radius per case (0 for abstentions).
        correct: whether each case's certified class is its true class (False for abstentions).
        grid: radii to evaluate at.

    Returns:
        One fraction per radius of ``grid``.

    Example:
        >>> import numpy as np
        >>> from medrobust.certify.classification import certified_fraction
        >>> certified_fraction(np.array([0.0, 1.0, 2.0]), np.array([False, True, True]), [0.0, 1.5])
        [0.6666666666666666, 0.3333333333333333]
    """
    r, ok = np.asarray(radii, dtype=np.float64), np.asarray(correct, dtype=bool)
    return [float(np.mean(ok & (r >= g))) if r.size else 0.0 for g in grid]
