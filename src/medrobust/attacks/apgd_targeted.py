"""APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, over the top-k target classes.

For each target rank (the 2nd, 3rd, ... largest clean logit, at most ``n_targets``;
:mod:`medrobust.attacks.target_loop`) one APGD run maximises the targeted DLR loss of the
reference code (``dlr_loss_targeted`` of ``APGDAttack_targeted``)

    -(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2 + 1e-12)

on the samples still classified correctly; a sample counts as fooled when it is
misclassified (into any class), as in the reference. The APGD step-size rule and its
differences from the reference are those of :class:`~medrobust.attacks.apgd.APGD`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from medrobust.attacks.apgd import APGD
from medrobust.attacks.base import AttackResult, AttackState
from medrobust.attacks.target_loop import over_targets
from medrobust.units import Budget

__all__ = ["APGDT", "dlr_targeted"]


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (Croce & Hein 2020), higher when the target class gains: ``(B,)``.

    ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2 + 1e-12)`` with π the classes sorted by
    decreasing logit. With K = 3 classes the denominator uses z_π3 alone, with K = 2 the
    loss is the unnormalised ``z_t - z_y`` (there are too few logits to normalise by).

    Args:
        logits: ``(B, K)`` raw scores.
        y: ``(B,)`` true labels.
        target: ``(B,)`` target classes.

    Returns:
        ``(B,)``; invariant to shifting and (positively) scaling the logits for K >= 3.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
        >>> dlr_targeted(logits, torch.tensor([0]), torch.tensor([1]))     # -(4 - 3) / (4 - 0.5)
        tensor([-0.2857])
    """
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, target[:, None])[:, 0]
    if logits.shape[1] < 3:
        return z_t - z_y
    top = logits.topk(min(logits.shape[1], 4), dim=1).values
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, -1]) / 2 + 1e-12)


class APGDT(APGD):
    """APGD-T: ``APGDT(budget, steps=100, n_targets=9)(model, x, y)``, classifiers only.

    Args:
        budget: the threat model (Linf or L2).
        n_targets: the most target classes per sample (9 in AutoAttack; fewer when the
            model has fewer than 10 classes: min(n_targets, K - 1)).
        **options: as :class:`~medrobust.attacks.apgd.APGD` (``steps``, ``restarts`` per
            target, ``random_start``, ``rho``, ``momentum``, ``early_stop``, ``keep``,
            ``seed``, ...), except ``loss`` and ``targeted``: the loss is the targeted DLR
            against the attack's own targets and ``y`` is the true label.

    Raises:
        ValueError: ``loss`` or ``targeted`` given, ``n_targets`` < 1, bad APGD options;
            at run time, segmentation labels.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)`` true labels; output as ``x``.
        - ``run(...).loss_history``: ``(k * R * (T + 1), B)``, NaN where a sample did not
          take part in a target's run.

    Example:
        >>> import torch
        >>> from medrobust.attacks import APGDT
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> budget = Budget.linf(0.05, valid_range=(0.0, 1.0))
        >>> result = APGDT(budget, steps=10, n_targets=3, seed=0).run(model, x, y)
        >>> bool((result.x_adv - x).abs().max() <= 0.05 + 1e-6), result.metric.shape
        (True, torch.Size([4]))
    """

    name = "apgd-t"

    def __init__(self, budget: Budget, *, n_targets: int = 9, **options: Any) -> None:
        for key in ("loss", "targeted"):
            if key in options:
                raise ValueError(f"APGDT has no {key!r} option: it maximises the targeted DLR loss towards its "
                                 "own target classes, with y the true labels")
        if isinstance(n_targets, bool) or not isinstance(n_targets, int) or n_targets < 1:
            raise ValueError(f"n_targets must be an integer >= 1, got {n_targets!r}")
        super().__init__(budget, **options)
        self.n_targets, self.loss_name = n_targets, "dlr-targeted"

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_targets={self.n_targets})"

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        if y.ndim != 1:
            raise ValueError("y: APGDT attacks classifiers; give (B,) class labels")
        return over_targets(model, x, y, base, self.n_targets, self._run_target, self.keep)

    def _run_target(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor,
                    state: AttackState) -> AttackResult:
        """One APGD run on the targeted DLR loss towards ``target`` (B,)."""
        inner = copy.copy(self)
        inner.loss_fn = lambda logits, y, **_: dlr_targeted(logits, y, target)
        return super(APGDT, inner)._attack(model, x, y, state)
