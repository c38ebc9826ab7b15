"""The statistics of certification against scipy/statsmodels and closed forms, and SegCertify's
multiple-testing correction on a synthetic case whose voxel p-values are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from statsmodels.stats.multitest import multipletests

from medrobust.certify import ABSTAIN
from medrobust.certify.bounds import lower_confidence_bound, pvalues_above, pvalues_top_two, radius, reject
from medrobust.certify.segmentation import seg_certify


def test_vectorised_clopper_pearson_equals_scipy_binomtest() -> None:
    n, alpha = 500, 0.001
    k = np.array([0, 1, 137, 250, 251, 499, 500])
    expected = [binomtest(int(v), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low for v in k]
    np.testing.assert_allclose(lower_confidence_bound(k, n, alpha), expected, rtol=1e-9, atol=1e-12)
    assert lower_confidence_bound(500, n, alpha) == pytest.approx(alpha ** (1 / n))  # closed form at k = n


def test_pvalues_equal_scipy_binomtest() -> None:
    n, tau = 200, 0.75
    k = np.arange(0, n + 1, 7)
    greater = [binomtest(int(v), n, tau, alternative="greater").pvalue for v in k]
    np.testing.assert_allclose(pvalues_above(k, n, tau), greater, rtol=1e-9)
    a, b = np.array([60, 55, 9, 100]), np.array([40, 45, 0, 3])
    two_sided = [binomtest(int(x), int(x + y), 0.5).pvalue for x, y in zip(a, b)]
    np.testing.assert_allclose(pvalues_top_two(a, b), two_sided, rtol=1e-9)


def test_radius_is_sigma_times_the_normal_quantile_and_zero_at_or_below_one_half() -> None:
    p = np.array([0.4, 0.5, 0.8413447460685429, 0.975])
    np.testing.assert_allclose(radius(p, 2.0), [0.0, 0.0, 2.0, 2 * norm.ppf(0.975)])


def _holm_by_hand(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down as written in Holm (1979): reject the i-th smallest while p_(i) <= alpha / (m - i)."""
    order, m = np.argsort(p, kind="stable"), p.size
    out = np.zeros(m, dtype=bool)
    for i, j in enumerate(order):
        if p[j] > alpha / (m - i):
            break
        out[j] = True
    return out


def test_holm_rejects_exactly_the_expected_voxels_of_a_synthetic_case() -> None:
    """A 6x6 map (m = 36) of hit counts chosen so the voxel p-values straddle Holm's thresholds.

    With n = 60, tau = 0.75 and alpha = 0.05, the p-value P(Binomial(60, 0.75) >= k) of
    k = 60, 58, 56, 54, 45 hits is 3.2e-8, 6.9e-6, 2.4e-4, 3.1e-3, 0.57. The nine voxels
    with 60/58/56 hits pass their Holm thresholds (at most 0.05/28 = 1.8e-3); the tenth
    (54 hits) fails 0.05/27 = 1.9e-3, which stops the step-down: exactly nine are certified.
    """
    n, tau, alpha = 60, 0.75, 0.05
    hits = np.full((6, 6), 45)
    hits[0, :4] = 60
    hits[1, :3] = 58
    hits[2, :2] = 56
    hits[3, :3] = 54
    p = pvalues_above(hits, n, tau)
    expected = np.zeros((6, 6), dtype=bool)
    expected[0, :4] = expected[1, :3] = expected[2, :2] = True
    assert (p[hits == 56] < alpha / (36 - 8)).all() and (p[hits == 54] > alpha / (36 - 9)).all()  # the design
    np.testing.assert_array_equal(reject(p, alpha, "holm"), expected)
    np.testing.assert_array_equal(reject(p, alpha, "holm").reshape(-1), _holm_by_hand(p.reshape(-1), alpha))
    np.testing.assert_array_equal(reject(p, alpha, "holm").reshape(-1),
                                  multipletests(p.reshape(-1), alpha, "holm")[0])

    selection = torch.zeros(2, 6, 6, dtype=torch.long)
    selection[1] = 10  # every voxel selects class 1
    cert = seg_certify(selection, torch.from_numpy(hits), n=n, alpha=alpha, tau=tau, correction="holm", sigma=25.0,
                       unit="HU", sigma_model=25 / 425)
    torch.testing.assert_close(cert.labels, torch.where(torch.from_numpy(expected), 1, ABSTAIN))
    assert cert.radius[torch.from_numpy(expected)].tolist() == pytest.approx([25 * norm.ppf(tau)] * 9)
    assert cert.radius[~torch.from_numpy(expected)].eq(0).all()
    assert cert.abstain_rate == pytest.approx(1 - 9 / 36)


def test_holm_rejects_more_than_bonferroni_where_the_step_down_matters() -> None:
    """m = 4 voxels with p = 0.001, 0.013, 0.014, 0.2 at alpha 0.05: Bonferroni (0.0125) rejects one,
    Holm (0.0125, 0.0167, 0.025, 0.05) rejects three."""
    p = np.array([0.001, 0.013, 0.014, 0.2])
    assert reject(p, 0.05, "bonferroni").tolist() == [True, False, False, False]
    assert reject(p, 0.05, "holm").tolist() == [True, True, True, False]


def test_per_voxel_radii_use_bonferroni_bounds_and_refuse_holm() -> None:
    n, alpha = 100, 0.01
    hits = torch.tensor([[100, 90], [50, 70]])
    selection = torch.zeros(3, 2, 2, dtype=torch.long)
    selection[2] = 5
    cert = seg_certify(selection, hits, n=n, alpha=alpha, tau=None, correction="bonferroni", sigma=0.5, unit="model",
                       sigma_model=0.5)
    p_low = [binomtest(int(k), n).proportion_ci(confidence_level=1 - 2 * alpha / 4, method="exact").low
             for k in hits.reshape(-1)]
    expected = [0.5 * norm.ppf(p) if p > 0.5 else 0.0 for p in p_low]
    np.testing.assert_allclose(cert.radius.reshape(-1).numpy(), expected, rtol=1e-9)
    assert cert.labels.tolist() == [[2, 2], [ABSTAIN, 2 if expected[3] > 0 else ABSTAIN]]
    with pytest.raises(ValueError, match="correction 'holm' needs a fixed tau"):
        seg_certify(selection, hits, n=n, alpha=alpha, tau=None, correction="holm", sigma=0.5, unit="model",
                    sigma_model=0.5)
