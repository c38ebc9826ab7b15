"""Attack ensembles: run several attacks, keep per sample the iterate that hurts the metric most.

An ensemble is how an honest worst case is measured (Croce & Hein 2020's AutoAttack for
classifiers; Halmosi et al. 2024 for segmentation): members run in order, each from the
clean image, and per sample the ensemble keeps the member's result with the worst outcome
(:func:`~medrobust.attacks.outcome.sample_metric`: misclassified, or the lowest foreground
Dice; the earlier member among equals). For classifiers, as AutoAttack's "standard"
version, a member runs only on the samples still classified correctly (``only_robust``).

Named presets are built in their own modules and registered like any attack:
``autoattack`` (:mod:`medrobust.attacks.autoattack`) and ``seg-ensemble``
(:mod:`medrobust.attacks.seg_ensemble`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackResult, check_inputs, frozen
from medrobust.attacks.outcome import sample_metric
from medrobust.units import Budget

__all__ = ["AttackEnsemble"]


class AttackEnsemble(Attack):
    """Run ``members`` in order and keep, per sample, the result that hurts the metric most.

    Args:
        budget: the threat model (reported; each member carries its own budget).
        members: ``(name, attack)`` pairs, run in this order.
        only_robust: run a member only on the samples no earlier member has fooled
            (classification; segmentation samples always go on, there is no "fooled").

    Raises:
        ValueError: no members, or two with the same name.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)`` or ``(B, 1, *spatial)``.
        - ``run(...).loss_history``: ``(M, B)``, the loss of each member's returned
          iterate (NaN where it did not run); ``extra["member"]``: ``(B,)`` index of the
          member whose iterate was kept (-1: none fooled the model, the clean image is
          returned); ``extra["metric_<name>"]``: ``(B,)`` each member's outcome (NaN where
          it did not run).

    Example:
        >>> import torch
        >>> from medrobust.attacks import FGSM, PGD
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> budget = Budget.linf(0.2, valid_range=(0.0, 1.0))
        >>> ens = AttackEnsemble(budget, [("fgsm", FGSM(budget)), ("pgd", PGD(budget, steps=10, seed=0))])
        >>> result = ens.run(model, x, y)
        >>> bool((result.metric <= result.extra["metric_fgsm"].nan_to_num(1.0)).all()), result.loss_history.shape
        (True, torch.Size([2, 4]))
    """

    name = "ensemble"
    uses_step_size = False

    def __init__(self, budget: Budget, members: Sequence[tuple[str, Attack]], *, only_robust: bool = True) -> None:
        if not members:
            raise ValueError("members: an ensemble needs at least one attack")
        names = [n for n, _ in members]
        if len(set(names)) != len(names):
            raise ValueError(f"members: names must be unique, got {names}")
        super().__init__(budget, steps=max(a.steps for _, a in members))
        self.members, self.only_robust = list(members), bool(only_robust)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {a!r}" for n, a in self.members)
        return f"{type(self).__name__}({self.budget.describe()}, [{inner}])"

    def describe(self) -> str:
        """One line naming the members and their steps (or queries), for reports.

        Returns:
            e.g. ``"ensemble of apgd-ce (100 steps), square (5000 queries); keeps per sample
            the member's result that hurts the metric most"``.
        """
        members = ", ".join(f"{n} ({a.steps} {a.effort_unit})" for n, a in self.members)
        robust = ", each on the samples still classified correctly" if self.only_robust else ""
        return f"ensemble of {members}{robust}; keeps per sample the member's result that hurts the metric most"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            mask: torch.Tensor | None = None) -> AttackResult:
        """Run the members; see the class docstring.

        Args:
            model: maps images to logits.
            x: clean images, model units.
            y: labels (or targets when the members are targeted).
            mask: limits the perturbation (passed to every member).

        Returns:
            The :class:`~medrobust.attacks.base.AttackResult` of the kept iterates.
        """
        check_inputs(x, y, mask)
        B = x.shape[0]
        classification = y.ndim == 1
        with torch.no_grad(), frozen(model):
            metric = sample_metric(model(x), y.to(x.device))
        best_x, member = x.detach().clone(), torch.full((B,), -1, device=x.device)
        best_loss = x.new_full((B,), math.nan)
        history, extra, seconds = [], {}, 0.0
        for i, (name, attack) in enumerate(self.members):
            todo = metric > 0 if classification and self.only_robust else torch.ones_like(metric, dtype=torch.bool)
            idx = todo.nonzero().flatten()
            loss_row, metric_row = x.new_full((B,), math.nan), x.new_full((B,), math.nan)
            if idx.numel():
                sub_mask = mask[idx] if mask is not None and mask.shape[0] == B else mask
                on_subset = copy.copy(attack)
                on_subset.budget = attack.budget.select(idx, B)  # per-sample eps and range of the subset
                result = on_subset.run(model, x[idx], y[idx], sub_mask)
                seconds += result.seconds
                got = result.metric
                if got is None or attack.targeted:  # a targeted member's metric is taken against its target
                    with torch.no_grad(), frozen(model):
                        got = sample_metric(model(result.x_adv), y[idx])
                loss_row[idx], metric_row[idx] = result.best_loss.to(x.dtype), got.to(x.dtype)
                worse = got.to(metric.dtype) < metric[idx]
                keep = idx[worse]
                best_x[keep], metric[keep] = result.x_adv[worse].to(x.dtype), got[worse].to(metric.dtype)
                best_loss[keep], member[keep] = result.best_loss[worse].to(x.dtype), i
            history.append(loss_row)
            extra[f"metric_{name}"] = metric_row
        extra["member"] = member.to(x.dtype)
        return AttackResult(best_x, torch.stack(history), best_loss, seconds, extra=extra, metric=metric)
