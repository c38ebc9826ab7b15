"""Binomial bounds, certified radii and multiple-testing corrections of randomized smoothing.

The statistics of Cohen et al. (2019) and Fischer et al. (2021) in one place, each taken
from scipy or statsmodels rather than re-derived:

- :func:`lower_confidence_bound`: the one-sided Clopper-Pearson lower bound on p_A at
  level 1 - alpha (``scipy.stats.binomtest(...).proportion_ci(method="exact")`` for one
  count, the same Beta quantile vectorised for a voxel map);
- :func:`radius`: ``sigma · Φ⁻¹(p)`` where p > 1/2, else 0 (abstain);
- :func:`pvalues_above`: per-voxel p-values of H0: p_A ≤ tau (SegCertify);
- :func:`pvalues_top_two`: Cohen's PREDICT test of n_A against n_B at 1/2;
- :func:`reject`: Holm or Bonferroni over a family of p-values
  (``statsmodels.stats.multitest.multipletests``), family-wise error at most alpha.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import beta, binom, binomtest, norm
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni")


def lower_confidence_bound(k: int | np.ndarray, n: int, alpha: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson lower bound on a binomial proportion at level 1 - ``alpha``.

    Equals the lower end of the two-sided exact interval at confidence 1 - 2·alpha, as in
    Cohen et al.'s ``proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]``.

    Args:
        k: successes (0 ≤ k ≤ n), an int or an integer array (one count per voxel).
        n: trials (≥ 1).
        alpha: the error level in (0, 1).

    Returns:
        The bound, a float for an int ``k``, a float64 array of ``k``'s shape otherwise
        (0 where k = 0).

    Shape:
        - k: ``()`` or any array shape; output: the same.

    Example:
        >>> from medrobust.certify.bounds import lower_confidence_bound
        >>> round(lower_confidence_bound(990, 1000, 0.001), 4)
        0.976
        >>> import numpy as np
        >>> lower_confidence_bound(np.array([0, 1000]), 1000, 0.001).round(4).tolist()
        [0.0, 0.9931]
    """
    if isinstance(k, (int, np.integer)):
        return float(binomtest(int(k), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low)
    counts = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = beta.ppf(alpha, counts, n - counts + 1)
    return np.where(counts > 0, low, 0.0)


def radius(p_lower: float | np.ndarray, sigma: float) -> float | np.ndarray:
    """Certified L2 radius ``sigma · Φ⁻¹(p_lower)`` where ``p_lower`` > 1/2, else 0 (abstain).

    Args:
        p_lower: lower bound on the top class probability (float or array).
        sigma: the noise standard deviation, in the unit the radius is wanted in.

    Returns:
        The radius in ``sigma``'s unit; a float for a float input, else an array.

    Shape:
        - p_lower: ``()`` or any shape; output: the same.

    Example:
        >>> from medrobust.certify.bounds import radius
        >>> round(radius(0.975, 25.0), 2), radius(0.5, 25.0)
        (49.0, 0.0)
    """
    p = np.asarray(p_lower, dtype=np.float64)
    out = np.where(p > 0.5, sigma * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)
    return float(out) if out.ndim == 0 else out


def pvalues_above(k: np.ndarray, n: int, tau: float) -> np.ndarray:
    """Per-voxel p-values of H0: p_A ≤ tau given k top-class hits in n samples.

    ``P(X ≥ k)`` for X ~ Binomial(n, tau): the one-sided exact binomial test
    (``scipy.stats.binomtest(k, n, tau, alternative="greater")``), vectorised.

    Args:
        k: hits per voxel, integer array with values in [0, n].
        n: samples (≥ 1).
        tau: the threshold on the top class probability, in (0.5, 1].

    Returns:
        float64 p-values of ``k``'s shape.

    Shape:
        - k: any shape; output: the same.

    Example:
        >>> import numpy as np
        >>> from medrobust.certify.bounds import pvalues_above
        >>> pvalues_above(np.array([75, 100]), 100, 0.75).round(4).tolist()
        [0.5535, 0.0]
    """
    return np.asarray(binom.sf(np.asarray(k) - 1, n, tau), dtype=np.float64)


def pvalues_top_two(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Cohen et al.'s PREDICT test: two-sided binomial p-values of n_A against n_B at 1/2.

    Equals ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue`` (the null is symmetric).

    Args:
        n_a: counts of the top class (integer array).
        n_b: counts of the runner-up (≤ n_a, same shape).

    Returns:
        float64 p-values (1 where n_a + n_b = 0).

    Shape:
        - n_a, n_b: any shape (equal); output: the same.

    Example:
        >>> import numpy as np
        >>> from medrobust.certify.bounds import pvalues_top_two
        >>> pvalues_top_two(np.array([60, 9]), np.array([40, 0])).round(4).tolist()
        [0.0569, 0.0039]
    """
    a, b = np.asarray(n_a, dtype=np.int64), np.asarray(n_b, dtype=np.int64)
    return np.minimum(1.0, 2.0 * binom.cdf(np.minimum(a, b), a + b, 0.5))


def check_correction(correction: str) -> str:
    """``correction`` if it is one of :data:`CORRECTIONS`, else a ValueError naming it.

    Args:
        correction: "holm" or "bonferroni".

    Returns:
        ``correction``.

    Raises:
        ValueError: any other value.

    Example:
        >>> from medrobust.certify.bounds import check_correction
        >>> check_correction("sidak")
        Traceback (most recent call last):
            ...
        ValueError: correction must be one of holm, bonferroni, got 'sidak'
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    return correction


def reject(pvalues: np.ndarray, alpha: float, correction: str = "holm") -> np.ndarray:
    """Which null hypotheses a family-wise test at level ``alpha`` rejects.

    Args:
        pvalues: the family's p-values, any shape (flattened for the test).
        alpha: the family-wise error level in (0, 1).
        correction: "holm" (step-down, Holm 1979) or "bonferroni" (p ≤ alpha / m).

    Returns:
        A bool array of ``pvalues``' shape, True where the hypothesis is rejected.

    Raises:
        ValueError: an unknown ``correction``.

    Shape:
        - pvalues: any shape; output: the same.

    Example:
        >>> import numpy as np
        >>> from medrobust.certify.bounds import reject
        >>> p = np.array([0.001, 0.02, 0.04])
        >>> reject(p, 0.05, "holm").tolist(), reject(p, 0.05, "bonferroni").tolist()
        ([True, True, True], [True, False, False])
    """
    check_correction(correction)
    flat = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        return np.zeros(np.shape(pvalues), dtype=bool)
    rejected = multipletests(flat, alpha=alpha, method=correction)[0]
    return np.asarray(rejected, dtype=bool).reshape(np.shape(pvalues))
