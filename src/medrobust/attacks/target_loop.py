"""The top-k target loop of AutoAttack's targeted members (APGD-T, FAB-T).

For the target rank r = 2, ..., k + 1 the target of a sample is the class of its r-th
largest clean logit (the reference's ``output.sort(dim=1)[1][:, -r]``), with
k = min(n_targets, K - 1). The run for rank r sees only the samples that no earlier rank
has fooled (nor the clean model misclassifies), as in ``APGDAttack_targeted.perturb`` of
Croce & Hein's code. Per sample the loop keeps the first fooling iterate, else (by the
attack's ``keep`` rule) the highest-loss one over the targets.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from medrobust.attacks.base import AttackResult, AttackState
from medrobust.attacks.outcome import IterateTracker, KeepRule, sample_metric

__all__ = ["RunOne", "over_targets", "subset_state", "target_classes"]

RunOne = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, AttackState], AttackResult]
"""``run_one(model, x, y, target, state) -> AttackResult``: one targeted run on a subset."""


def target_classes(logits: torch.Tensor, n_targets: int) -> torch.Tensor:
    """The target classes of each sample, best-ranked non-top class first.

    Args:
        logits: clean logits ``(B, K)``.
        n_targets: the most targets per sample (AutoAttack: 9).

    Returns:
        ``(B, k)`` class indices, k = min(n_targets, K - 1); column j is the class of the
        (j + 2)-th largest logit.

    Example:
        >>> import torch
        >>> target_classes(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), 9)
        tensor([[3, 2, 0]])
    """
    k = min(n_targets, logits.shape[1] - 1)
    order = logits.sort(dim=1)[1]                         # ascending, as the reference
    return torch.stack([order[:, -rank] for rank in range(2, k + 2)], 1)


def subset_state(state: AttackState, idx: torch.Tensor) -> AttackState:
    """The state of the samples ``idx`` (every per-sample tensor indexed), with no variable.

    Args:
        state: a run's state for B samples.
        idx: ``(n,)`` long indices into the batch.

    Returns:
        A new AttackState for the n samples (the generator is shared, ``var`` empty).

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> x = torch.zeros(3, 1, 2, 2)
        >>> state = AttackState.create(Budget.linf(torch.tensor([0.1, 0.2, 0.3])), x, torch.zeros(3), None, None)
        >>> sub = subset_state(state, torch.tensor([2, 0]))
        >>> sub.eps.tolist(), sub.budget.eps.tolist(), sub.eps_x.shape
        ([0.30000001192092896, 0.10000000149011612], [0.30000001192092896, 0.10000000149011612], torch.Size([2, 1, 1, 1]))
    """
    B = state.eps.shape[0]

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[idx] if t.ndim >= 1 and t.shape[0] == B else t

    return dataclasses.replace(
        state, budget=state.budget.select(idx, B), eps=pick(state.eps), alpha=pick(state.alpha),
        mask=None if state.mask is None else pick(state.mask), eps_x=pick(state.eps_x),
        neg_eps_x=pick(state.neg_eps_x), alpha_x=pick(state.alpha_x),
        low_x=None if state.low_x is None else pick(state.low_x),
        high_x=None if state.high_x is None else pick(state.high_x), var=torch.empty(0), aux={})


def over_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState, n_targets: int,
                 run_one: RunOne, keep: KeepRule) -> AttackResult:
    """Run ``run_one`` once per target rank on the samples still classified correctly.

    Args:
        model: the (frozen) classifier.
        x: clean images ``(B, C, *spatial)``.
        y: true labels ``(B,)``.
        base: the state of the whole batch.
        n_targets: the most target classes per sample.
        run_one: the targeted run on a subset (see :data:`RunOne`).
        keep: the keep rule among iterates that do not fool the model.

    Returns:
        The AttackResult of the batch: ``loss_history`` stacks the runs' histories
        (NaN where a sample did not take part), ``best_loss`` is NaN for samples never
        attacked (misclassified clean), ``metric`` is 1 (correct) or 0; each ``extra`` is
        taken from the run whose iterate is kept (NaN where none).

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)``.
        - result.loss_history: ``(k * R * (T + 1), B)`` for k targets that ran.

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 4))
        >>> x = torch.rand(2, 1, 1, 2)
        >>> y = model(x).argmax(1)                          # both correct
        >>> seen = []
        >>> def run_one(model, xs, ys, target, state):      # records its targets, fools nobody
        ...     seen.append(target.tolist())
        ...     n = len(xs)
        ...     return AttackResult(xs, torch.zeros(1, n), torch.zeros(n), 0.0, metric=torch.ones(n))
        >>> state = AttackState.create(Budget.linf(0.1), x, torch.zeros(2), None, None)
        >>> result = over_targets(model, x, y, state, 9, run_one, "metric")
        >>> len(seen), result.loss_history.shape           # K - 1 = 3 targets
        (3, torch.Size([3, 2]))
    """
    B = x.shape[0]
    with torch.no_grad():
        logits = model(x)
    targets = target_classes(logits, n_targets)
    clean = sample_metric(logits, y)
    robust = clean > 0
    kept = IterateTracker.start(x, keep, early_stop=False)
    kept.offer(x, x.new_full((B,), -math.inf), -clean.to(x.dtype))
    rows: list[torch.Tensor] = []
    extra: dict[str, torch.Tensor] = {}
    for j in range(targets.shape[1]):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        result = run_one(model, x[idx], y[idx], targets[idx, j], subset_state(base, idx))
        metric = result.metric
        if metric is None:
            with torch.no_grad():
                metric = sample_metric(model(result.x_adv), y[idx])
        gain, harm = x.new_full((B,), -math.inf), x.new_full((B,), -math.inf)
        gain[idx], harm[idx] = result.best_loss.to(x.dtype).nan_to_num(-math.inf), -metric.to(x.dtype)
        x_full = x.clone()
        x_full[idx] = result.x_adv
        better = kept.better(gain, harm)
        kept.offer(x_full, gain, harm)
        for key, value in result.extra.items():
            full = extra.setdefault(key, x.new_full((B,), math.nan))
            full[idx] = torch.where(better[idx], value.to(x.dtype), full[idx])
        robust[idx] = metric > 0
        history = x.new_full((result.loss_history.shape[0], B), math.nan)
        history[:, idx] = result.loss_history.to(x.dtype)
        rows.append(history)
    loss = torch.where(torch.isfinite(kept.gain), kept.gain, torch.full_like(kept.gain, math.nan))
    history = torch.cat(rows) if rows else x.new_empty((0, B))
    return AttackResult(kept.x, history, loss, 0.0, extra=extra, metric=-kept.harm)
