"""Smoothed: the certified radius of a linear classifier against its closed form, units, seeding,
memory-adaptive batches, sliding windows and bad arguments."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest, norm

from medrobust.certify import ABSTAIN, Smoothed
from medrobust.certify.sampling import NoiseCounter
from medrobust.units import IntensityMap

CT = IntensityMap.ct_window(-175, 250)  # 425 HU per model unit


class Linear2(torch.nn.Module):
    """Logits (0, w·x + b): class 1 iff the point is on the positive side of the hyperplane."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.mark.parametrize("p_a", [0.7, 0.9, 0.99])
def test_linear_radius_lies_in_the_clopper_pearson_interval_of_the_analytic_radius(p_a: float) -> None:
    """Under N(0, σ²I) noise, P(class 1) = Φ(margin / (σ‖w‖)) and the analytic radius σΦ⁻¹(p_A) is
    the distance to the hyperplane; the certificate must equal σΦ⁻¹ of the Clopper-Pearson lower
    bound, and the analytic radius must lie in σΦ⁻¹ of the (1 - 2α) interval."""
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(1, 1, 4, 4, generator=g), torch.rand(1, 1, 4, 4, generator=g)
    sigma_hu, n, alpha = 42.5, 2000, 0.001
    sigma_model = sigma_hu / 425
    margin = sigma_model * float(w.norm()) * norm.ppf(p_a)
    model = Linear2(w, margin - float((w * x).sum()))
    distance_hu = margin / float(w.norm()) * 425  # the exact robustness radius of this linear classifier

    cert = Smoothed(model, sigma_hu, unit="HU", imap=CT, batch_size=500, seed=3).certify(x, n0=100, n=n, alpha=alpha)

    interval = binomtest(cert.hits, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    low, high = sigma_hu * norm.ppf(interval.low), sigma_hu * norm.ppf(interval.high)
    print(f"p_A={p_a}: certified {cert.radius:.2f} HU, analytic {distance_hu:.2f} HU, CP interval [{low:.2f}, {high:.2f}]")
    assert cert.label == 1 and cert.unit == "HU"
    assert cert.radius == pytest.approx(low, rel=1e-9)
    assert low <= distance_hu <= high
    assert cert.radius_model == pytest.approx(cert.radius / 425, rel=1e-9)
    assert cert.sigma_model == pytest.approx(sigma_model)


def test_abstains_on_the_hyperplane_and_predict_abstains_too() -> None:
    w = torch.ones(1, 1, 2, 2)
    model = Linear2(w, 0.0)
    x = torch.zeros(1, 1, 2, 2)  # p_A = 1/2 exactly
    smoothed = Smoothed(model, 0.5, batch_size=200)
    cert = smoothed.certify(x, n0=50, n=400, alpha=0.001)
    assert cert.label == ABSTAIN and cert.radius == 0.0
    assert int(smoothed.predict(x, n=400, alpha=0.001)) == ABSTAIN


def test_the_same_seed_repeats_a_certificate_and_another_seed_draws_other_noise() -> None:
    model = Linear2(torch.ones(1, 1, 2, 2), 0.3)
    x = torch.zeros(1, 1, 2, 2)
    first = Smoothed(model, 0.5, seed=7, batch_size=64).certify(x, n0=10, n=300, alpha=0.01)
    again = Smoothed(model, 0.5, seed=7, batch_size=64).certify(x, n0=10, n=300, alpha=0.01)
    other = Smoothed(model, 0.5, seed=8, batch_size=64).certify(x, n0=10, n=300, alpha=0.01)
    assert (first.hits, first.radius) == (again.hits, again.radius)
    assert other.hits != first.hits


class OutOfMemoryAbove(torch.nn.Module):
    """A 1x1 conv segmenter that raises CUDA's out-of-memory message for batches above ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.conv, self.sizes = limit, torch.nn.Conv2d(1, 3, 1), []
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return self.conv(x)


def test_out_of_memory_halves_the_batch_and_draws_the_same_noise() -> None:
    x = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    model = OutOfMemoryAbove(limit=5)
    counter = NoiseCounter(model, batch_size=24)
    counts = counter.counts(x, 1.0, 50, torch.Generator().manual_seed(11))
    assert counter.batch_size == 3 and max(s for s in model.sizes if s <= 5) == 3  # 24 -> 12 -> 6 -> 3
    reference = NoiseCounter(OutOfMemoryAbove(limit=100), batch_size=3).counts(x, 1.0, 50,
                                                                                torch.Generator().manual_seed(11))
    torch.testing.assert_close(counts, reference)
    assert counts.shape == (3, 6, 6) and counts.sum(0).eq(50).all()


def test_errors_other_than_out_of_memory_propagate() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        NoiseCounter(Broken(), batch_size=8).counts(torch.zeros(1, 1, 2, 2), 1.0, 10, torch.Generator())


def test_a_volume_larger_than_the_roi_certifies_through_sliding_windows_as_whole() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 1)  # pointwise: the blended windows equal the whole-volume output
    x = torch.randn(1, 1, 12, 10, 10)
    whole = Smoothed(net, 0.3, batch_size=16, seed=2).certify(x, n0=8, n=64, alpha=0.01, tau=0.75)
    windowed = Smoothed(net, 0.3, roi_size=(8, 8, 8), batch_size=16, seed=2).certify(x, n0=8, n=64, alpha=0.01,
                                                                                      tau=0.75)
    torch.testing.assert_close(windowed.labels, whole.labels)
    torch.testing.assert_close(windowed.radius, whole.radius)
    assert 0 < whole.abstain_rate < 1


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma": 0.0}, "sigma must be a finite number > 0"),
    ({"sigma": math.nan}, "sigma must be a finite number > 0"),
    ({"unit": "mm"}, "unit 'mm' is unknown"),
    ({"unit": "HU", "imap": IntensityMap.z_score(0.0, 1.0)}, "unit 'HU' cannot be converted"),
    ({"unit": "raw"}, "unit 'raw' cannot be converted"),
])
def test_bad_smoothing_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Smoothed(torch.nn.Identity(), **{"sigma": 1.0, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    ({"n0": 0}, "n0 must be an integer >= 1"),
    ({"n": 0}, "n must be an integer >= 1"),
    ({"alpha": 1.0}, r"alpha must be in \(0, 1\)"),
    ({"alpha": 0.0}, r"alpha must be in \(0, 1\)"),
    ({"tau": 0.5}, r"tau must be in \(0.5, 1\]"),
    ({"tau": 1.2}, r"tau must be in \(0.5, 1\]"),
    ({"correction": "sidak"}, "correction must be one of holm, bonferroni"),
    ({"tau": 0.8}, "tau applies to segmenters only"),
])
def test_bad_certify_arguments_are_named(kwargs: dict, message: str) -> None:
    smoothed = Smoothed(Linear2(torch.ones(1, 1, 2, 2), 0.0), 0.5)
    with pytest.raises(ValueError, match=message):
        smoothed.certify(torch.zeros(1, 1, 2, 2), **{"n0": 5, "n": 10, "alpha": 0.01, **kwargs})


def test_only_one_case_at_a_time() -> None:
    with pytest.raises(ValueError, match=r"x must be one case \(1, C, \*spatial\)"):
        Smoothed(torch.nn.Conv2d(1, 2, 1), 0.5).certify(torch.zeros(2, 1, 4, 4), n0=5, n=10, alpha=0.01)
