"""Square attack, Linf (Andriushchenko et al. 2020): score-based, forward passes only.

Start: vertical stripes x ± eps (one random sign per channel and column). Each query
re-draws one random square (2D) or cube (3D) window of side s per sample, sets it to
x ± eps with one random sign per channel, projects onto the Budget (ball ∩ range ∩ mask)
and keeps it if the loss improved or, with ``keep="metric"`` (the default), if the outcome
got worse: a candidate that misclassifies is kept even when its loss is lower, as the
reference does for CE (Dice for segmentation). The window covers a fraction p of the voxels,
``s = round((p · n_voxels)^(1/d))``, with p halved on the paper's schedule
(:func:`p_schedule`). Used mainly to detect gradient masking (attacks/checks.py).

``extra["queries"]`` counts, per sample, the queries until it was fooled (misclassified,
or past the early-stop threshold), or all of them. Differences from the reference code: all
samples of the batch are queried in one forward (a fooled sample stops changing, with
``early_stop``, but is still evaluated), and a window that would change nothing is not
re-drawn.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackResult, AttackState
from medrobust.attacks.outcome import IterateTracker, worse
from medrobust.units import Budget, expand_to

__all__ = ["Square", "p_schedule"]

def p_schedule(p_init: float, query: int, n_queries: int) -> float:
    """Fraction of voxels the window covers at ``query`` (0-based) of ``n_queries``.

    The schedule of the reference code (halved at 10, 50, 200, 500, ... of 10 000
    queries), rescaled to ``n_queries``.

    Args:
        p_init: the fraction at the start (0.05 in the paper for Linf).
        query: the query index, 0-based.
        n_queries: the total number of queries.

    Returns:
        The fraction p in (0, p_init].

    Example:
        >>> p_schedule(0.05, 0, 1000), p_schedule(0.05, 3, 1000), p_schedule(0.05, 999, 1000)
        (0.05, 0.025, 9.765625e-05)
    """
    it = int(query / n_queries * 10000)
    for bound, div in zip((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, 10000), (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)):
        if it <= bound:
            return p_init / div
    return p_init


def _window(shape: tuple[int, ...], side: list[int], batch: int, gen: torch.Generator | None,
            device: torch.device) -> torch.Tensor:
    """Boolean (B, 1, *shape): one random box of the given sides per sample."""
    box = torch.ones((batch, *([1] * len(shape))), dtype=torch.bool, device=device)
    for axis, (n, s) in enumerate(zip(shape, side)):
        start = torch.randint(0, n - s + 1, (batch, 1), generator=gen, device=device)
        coord = torch.arange(n, device=device)[None]
        inside = (coord >= start) & (coord < start + s)                      # (B, n)
        inside = inside.reshape(batch, *([1] * axis), n, *([1] * (len(shape) - axis - 1)))
        box = box & inside
    return box.unsqueeze(1)


class Square(Attack):
    """Square attack (Linf only): random search with forward passes only.

    Args:
        budget: a Linf Budget.
        n_queries: model evaluations after the start point (default 1000).
        p_init: initial fraction of voxels per window (0.05 in the paper for Linf).
        loss: default "margin" (the paper's untargeted loss); any medrobust loss works.
        targeted, restarts, early_stop, return_best, seed: as :class:`Attack`. Square
            takes no ``steps``, ``step_size`` or ``random_start``.

    Raises:
        ValueError: a non-Linf budget, ``p_init`` outside (0, 1], ``n_queries`` < 1, or
            ``steps``/``step_size``/``random_start`` given.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - output: ``(B, C, *spatial)``; ``run(...).extra["queries"]``: ``(B,)`` queries
          until the sample was fooled (all of them if it never was).

    Example:
        >>> import torch
        >>> from medrobust.attacks import Square
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> result = Square(budget, n_queries=20, seed=0).run(model, x, y)
        >>> bool((result.x_adv - x).abs().max() <= budget.eps + 1e-6)
        True
        >>> result.loss_history.shape, result.extra["queries"]
        (torch.Size([21, 2]), tensor([21., 21.]))
    """

    name = "square"
    uses_step_size = False
    effort_unit = "queries"

    def __init__(self, budget: Budget, *, n_queries: int = 1000, p_init: float = 0.05, loss: Any = "margin",
                 **options: Any) -> None:
        if budget.norm != "linf":
            raise ValueError(f"budget: Square supports only 'linf' budgets, got {budget.norm!r}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        for key in ("steps", "step_size", "random_start"):
            if key in options:
                raise ValueError(f"Square has no {key!r} option (use n_queries)")
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
            raise ValueError(f"n_queries must be an integer >= 1, got {n_queries!r}")
        super().__init__(budget, steps=n_queries, loss=loss, **options)
        self.p_init = float(p_init)

    def _side(self, p: float, shape: tuple[int, ...]) -> list[int]:
        n = 1
        for s in shape:
            n *= s
        s = int(round((p * n) ** (1.0 / len(shape))))
        return [min(max(s, 1), max(size - 1, 1)) for size in shape]

    def _reached(self, harm: torch.Tensor, fails: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """(B,) True where the sample is fooled: it fails (early stopping) or, for a classifier, is misclassified."""
        if fails is not None:
            return fails
        if y.ndim == 1:
            return harm == (1.0 if self.targeted else 0.0)
        return torch.zeros_like(harm, dtype=torch.bool)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        B, C, shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
        sign = -1.0 if self.targeted else 1.0
        eps = expand_to(base.eps, x)
        gen, dev = base.generator, x.device
        history = x.new_empty((self.restarts * (self.steps + 1), B))
        kept = IterateTracker.start(x, self.keep, early_stop=self.early_stop is not False)
        queries = torch.zeros(B, device=dev)
        reached = torch.zeros(B, dtype=torch.bool, device=dev)
        row = 0
        with torch.no_grad():
            for _ in range(self.restarts):
                stripes = torch.randint(0, 2, (B, C, *([1] * (len(shape) - 1)), shape[-1]), generator=gen, device=dev)
                cur = base.budget.project(x, x + eps * (2 * stripes.to(x.dtype) - 1), base.mask)
                logits = model(cur)
                cur_gain = self._gain(logits, y, self.steps)
                cur_harm, fails = self._verdict(logits, y)
                queries += ~reached
                reached |= self._reached(cur_harm, fails, y)
                kept.offer(cur, cur_gain, cur_harm, fails)
                history[row], row = cur_gain * sign, row + 1
                for i in range(self.steps):
                    win = _window(shape, self._side(p_schedule(self.p_init, i, self.steps), shape), B, gen, dev)
                    signs = 2 * torch.randint(0, 2, (B, C, *([1] * len(shape))), generator=gen, device=dev).to(x.dtype) - 1
                    cand = base.budget.project(x, torch.where(win, x + eps * signs, cur), base.mask)
                    logits = model(cand)
                    gain = self._gain(logits, y, self.steps)
                    harm, fails = self._verdict(logits, y)
                    frozen = kept.done if kept.done is not None else torch.zeros_like(reached)
                    # a higher loss or (keep="metric") a worse outcome: the reference's rule for CE
                    accept = worse(self.keep, gain, harm, cur_gain, cur_harm) & ~frozen
                    queries += ~reached
                    reached |= accept & self._reached(harm, fails, y)
                    cur = torch.where(expand_to(accept, x), cand, cur)
                    cur_gain, cur_harm = torch.where(accept, gain, cur_gain), torch.where(accept, harm, cur_harm)
                    kept.offer(cur, cur_gain, cur_harm, None if fails is None else fails & accept)
                    history[row], row = cur_gain * sign, row + 1
                if kept.done is not None and bool(kept.done.all()):
                    break
        extra = {"queries": queries}
        if not self.return_best:
            return AttackResult(cur, history[:row], cur_gain * sign, 0.0, extra=extra)
        metric = kept.harm if self.targeted else -kept.harm
        return AttackResult(kept.x, history[:row], kept.gain * sign, 0.0, extra=extra, metric=metric)
