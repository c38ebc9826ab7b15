"""Empirical soundness check of certificates: PGD-L2 below the radius must change nothing.

A certificate of :class:`~medrobust.certify.Smoothed` says that no L2 perturbation smaller
than its radius changes the smoothed prediction (with probability at least 1 - alpha over
the sampling). :func:`check_soundness` attacks that claim on real cases: PGD-L2 at
``shrink`` (0.9) times the certified radius against :class:`NoisyAverage`, an expectation
over transformation (EOT) surrogate of the smoothed model (the mean softmax of the base
model over fixed noise draws, as SmoothAdv, Salman et al. 2019), then PREDICT at the
adversarial point. A certified prediction that PREDICT turns into another class (not
ABSTAIN) is a **violation**; a sound certificate has none. The same attack at several
times the radius (``far``) should change some, which shows the attack can bite.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from medrobust.attacks import PGD
from medrobust.certify.classification import ABSTAIN, ClassCertificate
from medrobust.certify.smoothing import Certificate, Smoothed
from medrobust.losses import ce
from medrobust.units import Budget


class NoisyAverage(nn.Module):
    """EOT surrogate of a smoothed model: log of the base model's mean softmax over fixed noise.

    The ``draws`` noise tensors are drawn once (``seed``), so the surrogate is a fixed,
    differentiable function an attack can follow; all draws of a batch go through ``model``
    in one forward pass (memory: ``draws`` x the batch).

    Args:
        model: the base model, logits ``(B, K)`` or ``(B, K, *spatial)``.
        sigma: the noise standard deviation in model units.
        draws: noise draws averaged over (≥ 1).
        shape: the shape of one input without the batch axis, ``(C, *spatial)``.
        seed: seed of the noise.

    Shape:
        - x: ``(B, *shape)``; output: the model's logits' shape (log-probabilities)

    Example:
        >>> import torch
        >>> from medrobust.evaluation.soundness import NoisyAverage
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 4)
        >>> eot = NoisyAverage(net, sigma=1e-6, draws=4, shape=(4,))
        >>> bool(torch.allclose(eot(x), net(x).log_softmax(1), atol=1e-4))   # tiny noise: the base model
        True
        >>> [round(p, 4) for p in NoisyAverage(net, 1.0, 8, (4,))(x).exp().sum(1).tolist()]  # log-probabilities
        [1.0, 1.0]
    """

    noise: torch.Tensor  # (draws, *shape), a buffer

    def __init__(self, model: nn.Module, sigma: float, draws: int, shape: Sequence[int], seed: int = 5) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.model = model
        self.register_buffer("noise", sigma * torch.randn(draws, *shape, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the mean softmax of ``model(x + noise)`` over the draws, ``(B, K, ...)``."""
        noise = self.noise.to(x)
        draws, batch = noise.shape[0], x.shape[0]
        logits = self.model((x[None] + noise[:, None]).flatten(0, 1))
        probs = logits.softmax(1).unflatten(0, (draws, batch)).mean(0)
        return probs.clamp_min(1e-12).log()


@dataclass
class SoundnessCounts:
    """What :func:`check_soundness` counted over its cases.

    Attributes:
        kind: "classifier" (counts are cases) or "segmenter" (counts are voxels).
        cases: cases certified.
        certified: certified predictions (cases with a class, or voxels).
        protected: of those, the ones whose radius exceeds the below-radius perturbation's
            norm (all of them with one radius per case: a classifier or SegCertify's tau).
        flipped_base: protected predictions the base model changes at the attack point.
        violations: protected predictions the smoothed PREDICT changes to another class
            (not ABSTAIN); a sound certificate has 0.
        changed_far: per multiple of the radius, certified predictions PREDICT changes
            after the attack at that multiple.
        max_ratio: largest ||δ|| / radius of the below-radius attacks (≤ shrink).
        seconds: certification wall time per case.
        certificates: the certificate of each case, in order.
        settings: the certification settings, for the report.
    """

    kind: str
    cases: int = 0
    certified: int = 0
    protected: int = 0
    flipped_base: int = 0
    violations: int = 0
    changed_far: dict[float, int] = field(default_factory=dict)
    max_ratio: float = 0.0
    seconds: list[float] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list, repr=False)
    settings: str = ""

    def report(self) -> str:
        """One line for a log.

        Example:
            >>> from medrobust.evaluation.soundness import SoundnessCounts
            >>> print(SoundnessCounts("classifier", 4, 3, 3, 1, 0, {8.0: 2}, settings="n=100").report())
            classifier (n=100): 4 cases, 3 certified predictions, base model flipped on 1, smoothed prediction
            changed below the radius on 0 (violations), at 8x the radius on 2
        """
        what = "certified voxels" if self.kind == "segmenter" else "certified predictions"
        settings = f" ({self.settings})" if self.settings else ""
        line = f"{self.kind}{settings}: {self.cases} cases, {self.certified} {what}"
        if self.protected != self.certified:
            line += f" ({self.protected} with a radius above the attack's norm)"
        line += (f", base model flipped on {self.flipped_base}, smoothed prediction changed below the radius on "
                 f"{self.violations} (violations)")
        return line + "".join(f", at {k:g}x the radius on {v}" for k, v in self.changed_far.items())


def _changed(after: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> int:
    return int(((after != labels) & (after != ABSTAIN) & where).sum())


def check_soundness(model: nn.Module, smoothed: Smoothed, images: Iterable[torch.Tensor], *, n0: int, n: int,
                    alpha: float, tau: float | None = None, shrink: float = 0.9, far: Sequence[float] = (),
                    draws: int = 8, steps: int = 20, seed: int = 0) -> SoundnessCounts:
    """Certify each image, attack it at ``shrink`` x its radius and count what changed.

    Per image: CERTIFY (or SegCertify with ``tau``); PGD-L2 (``steps``, cross-entropy
    towards leaving the certified labels, abstained voxels left out of the loss) against
    :class:`NoisyAverage` with ``draws`` draws at ``shrink`` x the certified radius (a
    segmenter: the largest certified voxel radius; with ``tau`` every certified voxel has
    that one radius); then the base model and PREDICT (``n`` samples, ``alpha``) at the
    adversarial point. Voxels whose radius is below the perturbation's norm (per-voxel
    radii, ``tau=None``) are not counted as protected.

    Args:
        model: the base model of ``smoothed`` (eval mode).
        smoothed: the smoothed model.
        images: cases ``(1, C, *spatial)`` in model units.
        n0: selection samples.
        n: estimation samples (also PREDICT's).
        alpha: error level (family-wise over the voxels of a segmenter).
        tau: SegCertify threshold (segmenters), or None.
        shrink: the attack's radius as a fraction of the certified one, in (0, 1).
        far: multiples of the radius (> 1) to attack as well; their changes are counted.
        draws: noise draws of the surrogate.
        steps: PGD iterations.
        seed: seed of the attack's random start.

    Returns:
        The :class:`SoundnessCounts`.

    Raises:
        ValueError: ``shrink`` outside (0, 1), or bad certification settings.

    Example:
        >>> import torch
        >>> from medrobust.certify import Smoothed
        >>> from medrobust.evaluation.soundness import check_soundness
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4])), net[1].bias.zero_()
        >>> images = [torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -0.5)]
        >>> counts = check_soundness(net, Smoothed(net, 0.25, seed=0), images, n0=10, n=200, alpha=0.001, far=(8,),
        ...                          steps=10)
        >>> counts.certified, counts.violations, counts.changed_far
        (2, 0, {8: 2})
    """
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}")
    settings = f"n0={n0}, n={n}, alpha={alpha:g}{f', tau={tau:g}' if tau is not None else ''}"
    counts = SoundnessCounts("classifier", changed_far={k: 0 for k in far}, settings=settings)
    for x in images:
        cert = smoothed.certify(x, n0=n0, n=n, alpha=alpha, tau=tau)
        counts.cases += 1
        counts.seconds.append(cert.seconds)
        counts.certificates.append(cert)
        if isinstance(cert, ClassCertificate):
            labels, radii = torch.tensor(cert.label), torch.tensor(cert.radius_model)
            keep, y, loss = torch.tensor(not cert.abstained), torch.tensor([max(cert.label, 0)]), ce
        else:
            counts.kind = "segmenter"
            labels, radii, keep = cert.labels, cert.radius_model, cert.labels != ABSTAIN
            y = labels.clamp_min(0)[None, None]
            loss = partial(ce, ignore_mask=(~keep)[None, None].to(x.device))
        certified = int(keep.sum())
        counts.certified += certified
        if certified == 0:
            continue
        r = float(radii[keep].max())
        surrogate = NoisyAverage(model, smoothed.sigma_model(x), draws, tuple(x.shape[1:]))

        def attack(eps: float) -> torch.Tensor:
            return PGD(Budget.l2(eps), steps=steps, loss=loss, seed=seed)(surrogate, x, y.to(x.device))  # noqa: B023

        x_adv = attack(shrink * r)
        norm = float((x_adv - x).norm())
        counts.max_ratio = max(counts.max_ratio, norm / r)
        protected = keep & (radii > norm)
        counts.protected += int(protected.sum())
        with torch.no_grad():
            base = model(x_adv).argmax(1)[0].cpu()
        counts.flipped_base += int(((base != labels) & protected).sum())
        counts.violations += _changed(smoothed.predict(x_adv, n=n, alpha=alpha), labels, protected)
        for k in far:
            counts.changed_far[k] += _changed(smoothed.predict(attack(k * r), n=n, alpha=alpha), labels, keep)
    return counts
