"""The verdict rule on synthetic results: a clear effect holds, no effect does not hold, a wide interval is
inconclusive; the interval is scipy's percentile bootstrap (one seed) or stratified by seed."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medrobust.reproduce.verdict import Effect, bootstrap_effect, verdict

MARGIN = 0.02


def _effect(values: np.ndarray, seeds: np.ndarray | None = None) -> Effect:
    return bootstrap_effect(values, margin=MARGIN, unit="Dice", seeds=seeds)


def test_a_clear_effect_holds() -> None:
    values = np.random.default_rng(0).normal(0.10, 0.03, 20)
    assert verdict(_effect(values)) == "holds"


def test_no_effect_does_not_hold() -> None:
    values = np.random.default_rng(1).normal(0.0, 0.01, 40)
    effect = _effect(values)
    assert effect.low < 0 < effect.high < MARGIN and verdict(effect) == "does not hold"
    assert verdict(_effect(-np.abs(values) - 0.05)) == "does not hold"  # reversed


def test_a_real_effect_below_the_margin_does_not_hold() -> None:
    values = np.random.default_rng(4).normal(0.005, 0.002, 40)
    effect = _effect(values)
    assert effect.low > 0 and effect.high < MARGIN and verdict(effect) == "does not hold"


def test_a_wide_interval_is_inconclusive() -> None:
    values = np.array([0.30, -0.25, 0.20])  # three cases that disagree
    effect = _effect(values)
    assert effect.low < 0 and effect.high > MARGIN and verdict(effect) == "inconclusive"


def test_a_smoke_run_says_so_whatever_the_numbers() -> None:
    assert verdict(_effect(np.full(10, 0.5)), smoke=True) == "smoke run"


def test_one_seed_interval_is_scipys_percentile_bootstrap() -> None:
    values = np.random.default_rng(2).normal(0.05, 0.05, 15)
    reference = stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0)
    effect = _effect(values)
    assert (effect.low, effect.high) == pytest.approx((reference.confidence_interval.low,
                                                        reference.confidence_interval.high))
    assert effect.mean == pytest.approx(values.mean()) and effect.cases == 15 and effect.seeds == 1


def test_seeds_are_resampled_within_each_seed() -> None:
    """Two seeds whose cases differ by a constant: a stratified resample keeps each seed's share fixed."""
    base = np.random.default_rng(3).normal(0.0, 0.01, 10)
    values, seeds = np.concatenate([base + 0.1, base - 0.1]), np.repeat([0, 1], 10)
    effect = _effect(values, seeds)
    assert effect.seeds == 2 and effect.high - effect.low < 0.02  # the seeds' offset does not widen it
    unstratified = _effect(values)
    assert unstratified.high - unstratified.low > 2 * (effect.high - effect.low)


@pytest.mark.parametrize(("values", "kwargs", "word"), [
    ([], {}, "differences"), ([0.1, float("nan")], {}, "differences"), ([0.1], {"margin": -1.0}, "margin"),
    ([0.1, 0.2], {"seeds": [0]}, "seeds"),
])
def test_bad_input_is_named(values: list[float], kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        bootstrap_effect(values, **{"margin": MARGIN, "unit": "Dice", **kwargs})
