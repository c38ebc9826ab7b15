"""SegCertify (Fischer, Baader and Vechev, ICML 2021): per-voxel certification of a segmenter.

From Monte Carlo counts (:class:`~medrobust.certify.sampling.NoiseCounter`): per voxel,
the n0 selection samples pick the top class c_A and the n estimation samples count its
hits n_A. Two modes, both with family-wise error at most alpha over all voxels:

- ``tau`` given (SegCertify): voxel v tests H0: p_A(v) ≤ tau with the exact binomial
  p-value ``P(Binomial(n, tau) ≥ n_A(v))``; Holm (or Bonferroni) over the voxels decides
  which are certified. Every certified voxel has radius ``sigma · Φ⁻¹(tau)``.
- ``tau`` None: each voxel gets its own Clopper-Pearson lower bound at level alpha / m
  (Bonferroni over m voxels: the only one of the two corrections that gives simultaneous
  bounds), and its own radius ``sigma · Φ⁻¹(p_lower(v))``.

Abstained voxels hold :data:`~medrobust.certify.classification.ABSTAIN` (-1) in the
certified label map and 0 in the radius map (a certified voxel's radius is > 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medrobust.certify.bounds import lower_confidence_bound, pvalues_above, radius, reject
from medrobust.certify.classification import ABSTAIN
from medrobust.metrics import dice_per_class


@dataclass(frozen=True)
class SegCertificate:
    """Certified label map and per-voxel radius map of one image.

    Attributes:
        labels: certified class per voxel, :data:`ABSTAIN` (-1) where abstained, int64
            ``(*spatial)`` on the CPU.
        radius: certified L2 radius per voxel in ``unit``, 0 where abstained, float64
            ``(*spatial)`` on the CPU.
        n0, n, alpha: the sampling settings.
        tau: the SegCertify threshold, or None (per-voxel bounds).
        correction: "holm" or "bonferroni", the correction that was applied.
        sigma, unit, sigma_model: the noise level as stated and in model units.
        seconds: wall time of the certification.

    Example:
        >>> import torch
        >>> from medrobust.certify.segmentation import seg_certify
        >>> sel = torch.tensor([[[10, 0], [5, 5]], [[0, 10], [5, 5]]])  # (K=2, 2, 2) selection counts
        >>> hits = torch.tensor([[100, 100], [50, 50]])                   # hits of the selected class
        >>> cert = seg_certify(sel, hits, n=100, alpha=0.01, tau=0.75, correction="holm", sigma=1.0, unit="model",
        ...                    sigma_model=1.0)
        >>> cert.labels.tolist(), round(cert.abstain_rate, 2)
        ([[0, 1], [-1, -1]], 0.5)
    """

    labels: torch.Tensor
    radius: torch.Tensor
    n0: int
    n: int
    alpha: float
    tau: float | None
    correction: str
    sigma: float
    unit: str
    sigma_model: float
    seconds: float = 0.0

    @property
    def abstain_rate(self) -> float:
        """Fraction of voxels where the smoothed segmenter abstains."""
        return float((self.labels == ABSTAIN).double().mean())

    @property
    def radius_model(self) -> torch.Tensor:
        """The radius map in model units, ``(*spatial)``."""
        return self.radius * (self.sigma_model / self.sigma)

    def labels_at(self, r: float) -> torch.Tensor:
        """The label map certified at radius ``r`` (in ``unit``): ABSTAIN where radius < r.

        Args:
            r: the radius (≥ 0).

        Returns:
            int64 ``(*spatial)``.
        """
        keep = (self.labels != ABSTAIN) & (self.radius >= r)
        return torch.where(keep, self.labels, torch.full_like(self.labels, ABSTAIN))

    def certified_dice(self, y: torch.Tensor, radii: list[float], num_classes: int,
                       include_background: bool = False) -> torch.Tensor:
        """Certified Dice per class at each radius; abstained voxels count as wrong.

        A voxel counts for class k at radius r when it is certified as k with radius ≥ r.
        Abstentions (and voxels certified below r) are predicted as no class: they are
        false negatives of their true class and false positives of none. Conventions of
        :func:`medrobust.metrics.dice_per_class` (a class absent from both scores 1).

        Args:
            y: the true labels ``(*spatial)``, ``(1, *spatial)`` or ``(1, 1, *spatial)``.
            radii: radii (in ``unit``) to score at.
            num_classes: K, background included.
            include_background: keep class 0 (default False, as the Dice metric).

        Returns:
            float32 ``(len(radii), K - 1)`` (or ``K`` with background).

        Shape:
            - y: the label map's shape, with optional leading singleton axes
            - output: ``(R, K')``
        """
        target = y.reshape(1, 1, *self.labels.shape).long().cpu()
        rows = []
        for r in radii:
            pred = self.labels_at(r)
            pred = torch.where(pred == ABSTAIN, torch.full_like(pred, num_classes), pred)  # an extra, wrong class
            dice = dice_per_class(pred.reshape(1, 1, *pred.shape), target, num_classes + 1, include_background)
            rows.append(dice[0, :-1])
        return torch.stack(rows)

    def summary(self, y: torch.Tensor, radii: list[float], classes: list[str]) -> list[dict[str, Any]]:
        """One JSON-ready record per radius: certified Dice per foreground class and their mean.

        Args:
            y: the true labels (see :meth:`certified_dice`).
            radii: radii in ``unit``.
            classes: the class names, background first.

        Returns:
            ``[{"radius", "unit", "abstain_rate", "certified_dice": {class: dice}, "mean_certified_dice"}]``.

        Example:
            >>> import torch
            >>> from medrobust.certify.segmentation import SegCertificate
            >>> cert = SegCertificate(labels=torch.tensor([[0, 1], [1, -1]]), radius=torch.tensor([[2.0, 2.0], [1.0, 0]]),
            ...                       n0=10, n=100, alpha=0.01, tau=None, correction="bonferroni", sigma=1.0,
            ...                       unit="model", sigma_model=1.0)
            >>> y = torch.tensor([[0, 1], [1, 1]])
            >>> [(s["radius"], round(s["mean_certified_dice"], 3)) for s in cert.summary(y, [0.0, 1.5], ["bg", "fg"])]
            [(0.0, 0.8), (1.5, 0.5)]
        """
        dice = self.certified_dice(y, radii, len(classes))
        return [{"radius": float(r), "unit": self.unit, "abstain_rate": self.abstain_rate,
                 "certified_dice": dict(zip(classes[1:], row.tolist())), "mean_certified_dice": float(row.mean())}
                for r, row in zip(radii, dice)]


def seg_certify(selection: torch.Tensor, hits: torch.Tensor, *, n: int, alpha: float, tau: float | None,
                correction: str, sigma: float, unit: str, sigma_model: float, seconds: float = 0.0) -> SegCertificate:
    """SegCertify from per-voxel counts (see the module docstring for the two modes).

    Args:
        selection: class counts over the n0 selection samples ``(K, *spatial)``.
        hits: per voxel, the estimation samples that predicted the selected class ``(*spatial)``.
        n: estimation samples (≥ 1).
        alpha: family-wise error level in (0, 1).
        tau: threshold in (0.5, 1], or None for per-voxel radii.
        correction: "holm" or "bonferroni" (None-``tau`` mode: "bonferroni" only).
        sigma: noise level in ``unit``.
        sigma_model: the same in model units.
        unit: the unit radii are stated in.
        seconds: wall time to record.

    Returns:
        The :class:`SegCertificate` (tensors on the CPU).

    Raises:
        ValueError: ``correction`` "holm" without ``tau``, or an unknown correction.

    Shape:
        - selection: ``(K, *spatial)``; hits: ``(*spatial)``
    """
    if tau is None and correction != "bonferroni":
        raise ValueError(f"correction {correction!r} needs a fixed tau; per-voxel radii (tau=None) are "
                         "simultaneous bounds, which only 'bonferroni' gives")
    top = selection.argmax(0).cpu()
    k = hits.cpu().numpy()
    if tau is not None:
        certified = torch.from_numpy(reject(pvalues_above(k, n, tau), alpha, correction))
        # with tau = 1 no voxel is ever rejected (P(X >= k) = 1), so the infinite radius is never used
        radii = torch.where(certified, float(radius(tau, sigma)), 0.0).to(torch.float64)
    else:
        p_lower = np.asarray(lower_confidence_bound(k, n, alpha / max(1, k.size)))
        radii = torch.from_numpy(np.asarray(radius(p_lower, sigma), dtype=np.float64).reshape(k.shape))
        certified = radii > 0
    labels = torch.where(certified, top, torch.full_like(top, ABSTAIN))
    n0 = int(selection.reshape(selection.shape[0], -1)[:, 0].sum())
    return SegCertificate(labels=labels, radius=radii, n0=n0, n=n, alpha=alpha, tau=tau, correction=correction, sigma=sigma, unit=unit,
                          sigma_model=sigma_model, seconds=seconds)
