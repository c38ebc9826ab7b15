"""Verdicts on a claim: an effect, its bootstrap interval over cases (and seeds), and the rule.

The effect of a claim is a per-case difference oriented so that the claim predicts it to be
positive (e.g. "VAFA hurts more": PGD's Dice minus VAFA's Dice, case by case). Its mean
gets a percentile bootstrap interval over cases (``scipy.stats.bootstrap``); with several
training seeds the cases of all seeds are resampled together, stratified by seed, so the
interval covers the spread between seeds too. The rule, stated on every page:

- **holds**: the whole interval lies above 0 and the mean reaches the claim's margin (the
  effect is there, in the claimed direction, and as large as the claim means);
- **does not hold**: the whole interval lies below the margin (the effect is absent,
  reversed, or smaller than the smallest effect the claim would mean);
- **inconclusive**: otherwise (the interval is too wide to tell).

A smoke run (``--quick``) states "smoke run" instead of a verdict.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

VERDICTS: tuple[str, ...] = ("holds", "does not hold", "inconclusive", "smoke run")
RULE = ("holds when the 95% bootstrap interval of the effect lies above 0 and its mean reaches the claim's margin; "
        "does not hold when the interval lies below the margin; inconclusive otherwise")


@dataclass(frozen=True)
class Effect:
    """A mean effect and its interval.

    Attributes:
        mean: the mean per-case difference (positive = as the claim says).
        low, high: the 95% percentile bootstrap interval of the mean.
        cases: the number of per-case differences.
        seeds: the number of training seeds they come from (1 without training).
        margin: the smallest effect the claim would mean, in the effect's units.
        unit: what the effect measures (e.g. "Dice points").
    """

    mean: float
    low: float
    high: float
    cases: int
    seeds: int
    margin: float
    unit: str

    def describe(self) -> str:
        """``+0.123 [0.045, 0.201] Dice (12 cases, 3 seeds)``.

        Returns:
            One line for the page.

        Example:
            >>> Effect(0.1, 0.05, 0.15, 12, 3, 0.02, "Dice").describe()
            '+0.100 [+0.050, +0.150] Dice (12 cases, 3 seeds; margin 0.02)'
        """
        return (f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] {self.unit} "
                f"({self.cases} cases, {self.seeds} seed{'s' if self.seeds != 1 else ''}; margin {self.margin:g})")


def bootstrap_effect(differences: Sequence[float] | np.ndarray, *, margin: float, unit: str,
                     seeds: Sequence[int] | np.ndarray | None = None, resamples: int = 2000, rng: int = 0) -> Effect:
    """The mean of per-case differences with its 95% percentile bootstrap interval.

    Args:
        differences: one value per (case, seed), oriented so the claim predicts > 0.
        margin: the smallest effect the claim would mean (>= 0).
        unit: what the values measure.
        seeds: the training seed of each value (resampled within each seed); None: one seed.
        resamples: bootstrap resamples.
        rng: the bootstrap's seed (the interval is reproducible).

    Returns:
        The :class:`Effect`.

    Raises:
        ValueError: no values, a non-finite value, a negative margin, or seeds of another length.

    Example:
        >>> effect = bootstrap_effect([0.10, 0.12, 0.08, 0.11, 0.09, 0.10], margin=0.02, unit="Dice")
        >>> round(effect.mean, 3), effect.low > 0.08, effect.high < 0.12
        (0.1, True, True)
    """
    values = np.asarray(differences, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"differences must be finite and non-empty, got {values.tolist()}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    groups = np.zeros(values.size, dtype=int) if seeds is None else np.asarray(seeds)
    if groups.shape != values.shape:
        raise ValueError(f"seeds has {groups.size} entries for {values.size} differences")
    labels = np.unique(groups)
    if values.size == 1 or np.ptp(values) == 0:
        low = high = float(values.mean())
    elif len(labels) == 1:  # scipy's percentile bootstrap
        res = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="percentile",
                              random_state=rng, confidence_level=0.95)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    else:  # stratified by seed (scipy resamples one sample only): each seed's cases among themselves
        gen = np.random.default_rng(rng)
        parts = [values[groups == g] for g in labels]
        means = [np.concatenate([p[gen.integers(0, p.size, p.size)] for p in parts]).mean() for _ in range(resamples)]
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    return Effect(float(values.mean()), low, high, int(values.size), int(len(labels)), float(margin), unit)


def verdict(effect: Effect, *, smoke: bool = False) -> str:
    """The verdict of :data:`RULE` on an effect.

    Args:
        effect: the effect with its interval and margin.
        smoke: a smoke run (``--quick``): its numbers mean nothing.

    Returns:
        One of :data:`VERDICTS`.

    Example:
        >>> verdict(Effect(0.10, 0.06, 0.14, 20, 1, 0.02, "Dice"))
        'holds'
        >>> verdict(Effect(0.00, -0.01, 0.01, 20, 1, 0.02, "Dice"))
        'does not hold'
        >>> verdict(Effect(0.02, -0.10, 0.14, 3, 1, 0.02, "Dice"))
        'inconclusive'
        >>> verdict(Effect(0.005, 0.001, 0.010, 40, 3, 0.02, "Dice"))  # real but below the margin
        'does not hold'
    """
    if smoke:
        return "smoke run"
    if effect.low > 0 and effect.mean >= effect.margin:
        return "holds"
    if effect.high < effect.margin:
        return "does not hold"
    return "inconclusive"
