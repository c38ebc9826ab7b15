"""Sanity checks that flag likely gradient masking, for a model, a batch and a budget.

After Athalye et al. 2018 and Carlini et al. 2019 ("On evaluating adversarial robustness"):

1. the white-box loss rises with PGD steps;
2. the black-box Square attack is not stronger than white-box PGD;
3. an eps covering the whole valid range drives the metric (accuracy, Dice) to chance.

A model that hides its gradient (rounds or detaches its input, saturates) fails one or
more of them; robust accuracy measured by gradient attacks is then not trustworthy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from medrobust.attacks.base import check_inputs, frozen, sample_metric
from medrobust.attacks.blackbox import Square
from medrobust.attacks.gradient import PGD
from medrobust.units import Budget, per_sample

__all__ = ["MaskingReport", "gradient_masking_check"]


@dataclass
class MaskingReport:
    """Outcome of :func:`gradient_masking_check`.

    Metrics are batch means (accuracy for classification, mean foreground Dice for
    segmentation; lower = stronger attack).

    Attributes:
        metric_name: "accuracy" or "dice".
        loss_curve: batch-mean PGD loss at each of the T + 1 evaluated iterates.
        loss_increases: the best PGD loss is above the start's.
        clean_metric, whitebox_metric, blackbox_metric, huge_eps_metric: the metric on the
            clean images, after PGD, after Square and after PGD with an eps covering the
            whole valid range.
        chance_metric: the expected metric of a uniformly random prediction.
        likely_masking: True when any check failed.
        reasons: one sentence per failed check.

    Example:
        >>> r = MaskingReport("accuracy", [0.5, 0.9], True, 1.0, 0.25, 0.75, 0.0, 1 / 3, False)
        >>> r.summary()
        'accuracy: clean 1.000, PGD 0.250, Square 0.750, huge eps 0.000 (chance 0.333); no sign of gradient masking'
    """

    metric_name: str
    loss_curve: list[float]
    loss_increases: bool
    clean_metric: float
    whitebox_metric: float
    blackbox_metric: float
    huge_eps_metric: float
    chance_metric: float
    likely_masking: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the four metrics, chance and the verdict with its reasons.

        Returns:
            The summary line.

        Example:
            >>> MaskingReport("dice", [0.3, 0.3], False, 0.9, 0.9, 0.9, 0.9, 0.1, True,
            ...               ["the PGD loss did not rise"]).summary()
            'dice: clean 0.900, PGD 0.900, Square 0.900, huge eps 0.900 (chance 0.100); likely gradient masking: the PGD loss did not rise'
        """
        verdict = "likely gradient masking: " + "; ".join(self.reasons) if self.likely_masking else "no sign of gradient masking"
        return (f"{self.metric_name}: clean {self.clean_metric:.3f}, PGD {self.whitebox_metric:.3f}, Square "
                f"{self.blackbox_metric:.3f}, huge eps {self.huge_eps_metric:.3f} (chance {self.chance_metric:.3f}); {verdict}")


def _chance(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Expected metric of a prediction drawn uniformly over the K classes.

    For segmentation, Dice 2f/K / (f + 1/K) for a class of volume fraction f, 0 for a class absent from y.
    """
    k = logits.shape[1]
    if y.ndim == 1:
        return 1.0 / k
    frac = torch.stack([(y == c).flatten(1).double().mean(1) for c in range(1, k)], 1)   # (B, K-1)
    return float((2 * frac / k / (frac + 1.0 / k)).mean())


def _huge(budget: Budget, x: torch.Tensor) -> Budget:
    """The budget with an eps that covers the whole valid range (or 10× the data's span)."""
    lo, hi = per_sample(budget.low, x.shape[0]), per_sample(budget.high, x.shape[0])
    span = (x.detach().flatten(1).amax(1) - x.detach().flatten(1).amin(1)).double().cpu().clamp_min(1e-3)
    width = torch.where(torch.isfinite(hi - lo), hi - lo, 10 * span)
    if budget.norm == "l2":
        width = width * math.sqrt(x[0].numel())
    return budget.with_eps(width, unit="model")


def gradient_masking_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget, *, steps: int = 20,
                           n_queries: int = 300, loss: str = "ce", mask: torch.Tensor | None = None,
                           tolerance: float = 0.05, seed: int = 0) -> MaskingReport:
    """Run PGD, Square and a whole-range PGD on ``(x, y)`` and report signs of masking.

    Args:
        model: maps images to logits.
        x: images, model units.
        y: labels ``(B,)`` or ``(B, 1, *spatial)``.
        budget: the budget robustness is claimed at (for an L2 budget, Square searches the
            largest Linf ball inside it).
        steps: PGD steps (default 20).
        n_queries: Square queries (default 300).
        loss: the white-box loss (default "ce"; "dice_ce" etc. for segmentation).
        tolerance: how much lower (metric units) Square or the whole-range attack may be
            than expected before it counts as a sign.
        mask: limits every attack to its nonzero voxels, ``(B, 1, *spatial)``; optional.
        seed: seeds PGD's random start and Square.

    Returns:
        a MaskingReport; ``likely_masking`` is True when any check fails (see ``reasons``).

    Raises:
        ValueError: bad ``x``/``y``/``mask`` or attack options.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> report = gradient_masking_check(model, x, y, budget, steps=10, n_queries=50)
        >>> report.likely_masking, report.clean_metric, report.huge_eps_metric
        (False, 1.0, 0.0)
        >>> class Hidden(torch.nn.Module):              # detaches its input: no gradient
        ...     def __init__(self, net):
        ...         super().__init__()
        ...         self.net = net
        ...     def forward(self, x):
        ...         return self.net(x.detach())
        >>> report = gradient_masking_check(Hidden(model), x, y, budget, steps=10, n_queries=50)
        >>> report.likely_masking, report.loss_increases
        (True, False)
    """
    check_inputs(x, y, mask)
    pgd = PGD(budget, steps=steps, loss=loss, seed=seed).run(model, x, y, mask)
    # Square is Linf-only: for an L2 budget use the largest Linf ball inside the L2 ball
    # (eps / sqrt(n)), so that Square searches a subset of what PGD may use
    square_budget = budget if budget.norm == "linf" else Budget.linf(
        budget.eps / math.sqrt(x[0].numel()), "model", (budget.low, budget.high))
    square = Square(square_budget, n_queries=n_queries, seed=seed).run(model, x, y, mask)
    huge = PGD(_huge(budget, x), steps=steps, loss=loss, random_start=False).run(model, x, y, mask)
    with frozen(model), torch.no_grad():
        clean_logits = model(x)
        clean, white, black, wide = (float(sample_metric(model(v), y.to(x.device)).mean())
                                     for v in (x, pgd.x_adv, square.x_adv, huge.x_adv))
    curve = pgd.loss_history.mean(1)
    start, best = float(curve[0]), float(pgd.best_loss.mean())
    increases = best > start + 1e-4 * (1 + abs(start))
    chance = _chance(clean_logits, y)
    name = "accuracy" if y.ndim == 1 else "dice"
    reasons = []
    if not increases:
        reasons.append(f"the PGD loss did not rise over {steps} steps (start {start:.4g}, best {best:.4g})")
    if black < white - tolerance:
        reasons.append(f"black-box Square ({name} {black:.3f}) is stronger than white-box PGD ({white:.3f})")
    if wide > chance + tolerance:
        reasons.append(f"an eps covering the whole range leaves {name} {wide:.3f} above chance ({chance:.3f})")
    return MaskingReport(name, [float(v) for v in curve], increases, clean, white, black, wide, chance,
                         bool(reasons), reasons)
