"""``Smoothed``: randomized smoothing of any classifier or segmenter, in the user's units.

``Smoothed(model, sigma, unit="HU", imap=...)`` is the smoothed model
g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ² I), of a base model f (Cohen, Rosenfeld and
Kolter 2019; per voxel for segmenters, Fischer, Baader and Vechev 2021). σ is stated in a
budget unit (``model``, ``raw``, ``HU``, ``1/255``) and converted to model units through the
case's :class:`~medrobust.units.IntensityMap` exactly as an attack budget is; radii come
back in the same unit. Because raw → model units is affine (clipping is 1-Lipschitz), an L2
perturbation of r HU moves the model input by at most r / scale, so a radius stated in HU
holds for perturbations of the scan in HU.

Noise is not clipped to the valid range (the certificate is about g on all of R^d).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from medrobust.certify.bounds import check_correction, pvalues_top_two, reject
from medrobust.certify.classification import ABSTAIN, ClassCertificate, certify_counts
from medrobust.certify.sampling import NoiseCounter
from medrobust.certify.segmentation import SegCertificate, seg_certify
from medrobust.models.inference import needs_window
from medrobust.models.wrappers import SlidingWindow
from medrobust.units import UNITS, IntensityMap, budget_for_case, to_model_units

Certificate = ClassCertificate | SegCertificate


def check_settings(*, sigma: float | None = None, n0: int | None = None, n: int | None = None,
                   alpha: float | None = None, tau: float | None = None) -> None:
    """Refuse bad certification settings; each message starts with the argument's name.

    Args:
        sigma: noise level (> 0, finite).
        n0: selection samples (integer ≥ 1).
        n: estimation samples (integer ≥ 1).
        alpha: error level in (0, 1).
        tau: SegCertify threshold in (0.5, 1].

    Raises:
        ValueError: the first bad argument, named first in the message.

    Example:
        >>> from medrobust.certify.smoothing import check_settings
        >>> check_settings(sigma=0.25, n0=10, n=100, alpha=0.001, tau=0.75)
        >>> check_settings(tau=0.5)
        Traceback (most recent call last):
            ...
        ValueError: tau must be in (0.5, 1], got 0.5
    """
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    for name, value in (("n0", n0), ("n", n)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if tau is not None and not 0.5 < tau <= 1.0:
        raise ValueError(f"tau must be in (0.5, 1], got {tau}")


class Smoothed:
    """Randomized smoothing of ``model`` at noise level ``sigma`` (in ``unit``).

    Args:
        model: image ``(B, C, *spatial)`` in model units → logits ``(B, K)`` (classifier)
            or ``(B, K, *spatial)`` (segmenter); run in eval mode without a graph.
        sigma: the noise standard deviation (> 0) in ``unit``.
        unit: "model", "raw", "HU" or "1/255" (of the case's valid range, as budgets).
        imap: the data's IntensityMap (needed for "raw" and "HU"; gives the valid range
            for "1/255" when it clips, else each case's own range is used).
        roi_size: the model's window; larger inputs go through
            :class:`~medrobust.models.wrappers.SlidingWindow` (default: never windowed).
        overlap: sliding-window overlap in [0, 1).
        batch_size: noise samples per forward pass to start with; halved when memory runs out.
        seed: seed of the noise generator; the same seed and batch size give the same result.

    Raises:
        ValueError: ``sigma`` not > 0 or NaN, an unknown ``unit``, a unit the map cannot
            convert (message starts with "unit"), or ``batch_size`` < 1.

    Shape:
        - x: ``(1, C, *spatial)`` (one case)

    Example:
        >>> import torch
        >>> from medrobust.certify import Smoothed
        >>> from medrobust.units import IntensityMap
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.zero_(), net[1].bias.copy_(torch.tensor([0.0, 5.0]))  # always class 1
        >>> smoothed = Smoothed(net, sigma=25, unit="HU", imap=IntensityMap.ct_window(-175, 250), batch_size=50)
        >>> cert = smoothed.certify(torch.rand(1, 1, 4, 4), n0=10, n=100, alpha=0.001)
        >>> cert.label, round(cert.radius, 1), cert.unit        # all 100 hits: 25 HU · Φ⁻¹(0.001^(1/100))
        (1, 37.5, 'HU')
    """

    def __init__(self, model: nn.Module, sigma: float, unit: str = "model", imap: IntensityMap | None = None, *,
                 roi_size: Sequence[int] | None = None, overlap: float = 0.25, batch_size: int = 64,
                 seed: int = 0) -> None:
        check_settings(sigma=float(sigma))
        if unit not in UNITS:
            raise ValueError(f"unit {unit!r} is unknown; allowed: {', '.join(UNITS)}")
        if unit in ("raw", "HU"):
            try:
                to_model_units(sigma, unit, intensity=imap, valid_range=None, what="sigma")
            except ValueError as err:
                raise ValueError(f"unit {unit!r} cannot be converted: {err}") from None
        self.model, self.sigma, self.unit, self.imap = model, float(sigma), unit, imap
        self.roi_size = tuple(roi_size) if roi_size is not None else None
        self.overlap, self.seed = float(overlap), int(seed)
        self.batch_size = NoiseCounter(model, batch_size).batch_size  # validated; lowered when memory runs out

    def sigma_model(self, x: torch.Tensor) -> float:
        """σ in model units for the case ``x`` (its range matters for "1/255" on z-scored data).

        Args:
            x: one case ``(1, C, *spatial)``, model units.

        Returns:
            σ in model units.

        Example:
            >>> import torch
            >>> from medrobust.certify import Smoothed
            >>> from medrobust.units import IntensityMap
            >>> s = Smoothed(torch.nn.Identity(), 25, "HU", IntensityMap.ct_window(-175, 250))
            >>> round(s.sigma_model(torch.zeros(1, 1, 4, 4)), 4)
            0.0588
        """
        rng = budget_for_case("l2", 0.0, "model", x, self.imap)
        return float(to_model_units(self.sigma, self.unit, intensity=self.imap, valid_range=(rng.low, rng.high),
                                    what="sigma").reshape(-1)[0])

    def _counter(self, x: torch.Tensor) -> NoiseCounter:
        """A counter for the case ``x``: the model, windowed when ``x`` exceeds the ROI."""
        if x.ndim < 3 or x.shape[0] != 1:
            raise ValueError(f"x must be one case (1, C, *spatial), got shape {tuple(x.shape)}")
        model = self.model
        if self.roi_size is not None and needs_window(x, self.roi_size) and not isinstance(model, SlidingWindow):
            model = SlidingWindow(model, self.roi_size, self.overlap, sw_batch_size=self.batch_size)
        return NoiseCounter(model, self.batch_size)

    def _generator(self, x: torch.Tensor) -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(self.seed)

    def predict(self, x: torch.Tensor, n: int, alpha: float, correction: str = "holm") -> torch.Tensor:
        """Cohen et al.'s PREDICT: the smoothed prediction, or ABSTAIN where not significant.

        The top two classes' counts n_A, n_B over ``n`` samples are tested at 1/2 (binomial,
        two-sided); the prediction is returned where the test rejects at level ``alpha``
        (for a segmenter, over all voxels with ``correction``), else :data:`ABSTAIN`.

        Args:
            x: one case ``(1, C, *spatial)``, model units.
            n: noise samples (≥ 1).
            alpha: error level in (0, 1).
            correction: "holm" or "bonferroni" over the voxels (a classifier has one test).

        Returns:
            int64 on the CPU: ``()`` for a classifier, ``(*spatial)`` for a segmenter.

        Raises:
            ValueError: bad ``n``, ``alpha`` or ``correction``, or ``x`` not one case.

        Example:
            >>> import torch
            >>> from medrobust.certify import Smoothed
            >>> seg = torch.nn.Conv2d(1, 2, 1)
            >>> with torch.no_grad():
            ...     _ = seg.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)), seg.bias.zero_()  # 1 where x > 0
            >>> x = torch.tensor([[[[-1.0, 1.0], [1.0, 0.0]]]])
            >>> Smoothed(seg, sigma=0.25).predict(x, n=100, alpha=0.01).tolist()
            [[0, 1], [1, -1]]
        """
        check_settings(n=n, alpha=alpha)
        check_correction(correction)
        counter = self._counter(x)
        counts = counter.counts(x, self.sigma_model(x), n, self._generator(x)).cpu()
        self.batch_size = counter.batch_size
        top2 = counts.topk(2, dim=0) if counts.shape[0] > 1 else None
        if top2 is None:  # one class: always that class
            return torch.zeros(counts.shape[1:], dtype=torch.int64)
        p = pvalues_top_two(top2.values[0].numpy(), top2.values[1].numpy())
        significant = torch.from_numpy(reject(p, alpha, correction))
        return torch.where(significant, top2.indices[0], torch.full_like(top2.indices[0], ABSTAIN))

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, tau: float | None = None,
                correction: str | None = None) -> Certificate:
        """CERTIFY (Cohen et al.) for a classifier, SegCertify (Fischer et al.) for a segmenter.

        ``n0`` selection samples pick the top class (per voxel), ``n`` further samples
        estimate its probability; the radius is ``sigma · Φ⁻¹(p_A)`` with p_A the
        Clopper-Pearson lower bound (classifier, or segmenter without ``tau``) or ``tau``
        (SegCertify).

        Args:
            x: one case ``(1, C, *spatial)``, model units.
            n0: selection samples (≥ 1).
            n: estimation samples (≥ 1).
            alpha: error level in (0, 1); family-wise over the voxels of a segmenter.
            tau: SegCertify threshold in (0.5, 1] (segmenters only), or None: per-voxel radii.
            correction: "holm" or "bonferroni" over the voxels; default "holm" with ``tau``,
                "bonferroni" without (the only one valid for per-voxel radii).

        Returns:
            A :class:`ClassCertificate` (logits ``(1, K)``) or a :class:`SegCertificate`.

        Raises:
            ValueError: a bad argument (named first in the message), ``tau`` given for a
                classifier, or ``x`` not one case.

        Example:
            >>> import torch
            >>> from medrobust.certify import Smoothed
            >>> seg = torch.nn.Conv2d(1, 2, 1)
            >>> with torch.no_grad():
            ...     _ = seg.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)), seg.bias.zero_()  # 1 where x > 0
            >>> x = torch.tensor([[[[-1.0, 1.0], [1.0, 0.0]]]])
            >>> cert = Smoothed(seg, sigma=0.25).certify(x, n0=10, n=200, alpha=0.01, tau=0.9)
            >>> cert.labels.tolist(), round(float(cert.radius.max()), 3), cert.abstain_rate
            ([[0, 1], [1, -1]], 0.32, 0.25)
        """
        check_settings(n0=n0, n=n, alpha=alpha, tau=tau)
        if correction is not None:
            check_correction(correction)
        start = time.perf_counter()
        counter, sigma_model, generator = self._counter(x), self.sigma_model(x), self._generator(x)
        selection = counter.counts(x, sigma_model, n0, generator)
        if selection.ndim == 1:
            if tau is not None:
                raise ValueError("tau applies to segmenters only (a classifier's radius comes from its own p_A bound)")
            estimation = counter.counts(x, sigma_model, n, generator)
            self.batch_size = counter.batch_size
            return certify_counts(selection.cpu(), estimation.cpu(), alpha=alpha, sigma=self.sigma, unit=self.unit,
                                  sigma_model=sigma_model, seconds=time.perf_counter() - start)
        top = selection.argmax(0, keepdim=True)
        hits = counter.counts(x, sigma_model, n, generator).gather(0, top)[0]
        self.batch_size = counter.batch_size
        chosen = correction or ("holm" if tau is not None else "bonferroni")
        return seg_certify(selection.cpu(), hits.cpu(), n=n, alpha=alpha, tau=tau, correction=chosen,
                           sigma=self.sigma, unit=self.unit, sigma_model=sigma_model,
                           seconds=time.perf_counter() - start)

