"""Auto-PGD, Linf and L2, with CE or DLR loss.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks".

Step size starts at 2·eps and is halved at checkpoints w_j = ceil(p_j N), p_0 = 0,
p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), when since the last checkpoint

1. the loss rose in at most ρ = 75 % of the steps, or
2. the step size was not halved at the last checkpoint and the best loss did not improve;

and the iterate then restarts from the best point (with that point's gradient). Each step
adds momentum 0.75: ``x_{k+1} = P(x_k + 0.75 (z_{k+1} - x_k) + 0.25 (x_k - x_{k-1}))``,
``z_{k+1} = P(x_k + η direction(∇))``. For segmentation the loss is the per-sample mean
voxel loss (pixel-wise CE/DLR), as every loss in medrobust.losses is.

Differences from the reference code: condition 1 of the first checkpoint compares with the
loss at the start point (the reference compares with an unset zero), the start point is
uniform in the ball (the reference scales it onto the Linf sphere), and every step is
vectorised over the batch without host syncs.
"""
from __future__ import annotations

from typing import Any

import torch

from medrobust.attacks.base import Attack, AttackState
from medrobust.attacks.gradient import ascent_direction
from medrobust.units import Budget, expand_to

__all__ = ["APGD", "apgd_checkpoints"]


def _schedule(steps: int) -> tuple[int, int, int]:
    """(first checkpoint, smallest interval, interval decrement) as in the reference code."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def apgd_checkpoints(steps: int) -> list[int]:
    """Checkpoints w_j of a run of ``steps`` steps (Croce & Hein 2020, section 3.2).

    After w_j steps the step size is checked (before the next step), so only w_j < steps
    can affect the run.

    Args:
        steps: the number of steps N >= 1.

    Returns:
        The increasing checkpoints ``[w_1, w_2, ...]``, all < ``steps``.

    Example:
        >>> apgd_checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
        >>> apgd_checkpoints(1)
        []
    """
    first, smallest, decrement = _schedule(steps)
    out, k, at = [], first, first
    while at < steps:
        out.append(at)
        k = max(k - decrement, smallest)
        at += k
    return out


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020); ``APGD(budget, steps=100, loss="dlr")(model, x, y)``.

    Step-size free: η starts at 2·eps and is halved at the checkpoints of
    :func:`apgd_checkpoints` when progress stalls (see the module docstring).

    Args:
        budget: the threat model (Linf or L2).
        rho: fraction of increasing steps below which the step size is halved (0.75).
        momentum: weight of the new step, 0.75 in the paper (the first step uses 1).
        **options: ``steps`` (default 10; the paper uses 100), ``loss`` ("ce" default,
            "dlr" for APGD-DLR, any name of :mod:`medrobust.losses`), ``targeted``,
            ``restarts``, ``random_start`` (default True), ``early_stop``, ``return_best``,
            ``seed``, as :class:`~medrobust.attacks.base.Attack`. ``step_size`` is not
            accepted (it starts at 2·eps).

    Raises:
        ValueError: ``step_size`` given, ``rho`` or ``momentum`` outside (0, 1], or bad options.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import APGD
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W), model units in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) the clean prediction
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> attack = APGD(budget, steps=20, loss="dlr", seed=0)
        >>> result = attack.run(model, x, y)
        >>> bool((result.x_adv - x).abs().max() <= budget.eps + 1e-6)
        True
        >>> result.loss_history.shape
        torch.Size([21, 2])
    """

    name = "apgd"
    default_random_start = True
    uses_step_size = False

    def __init__(self, budget: Budget, *, rho: float = 0.75, momentum: float = 0.75, **options: Any) -> None:
        if "step_size" in options:
            raise ValueError("APGD sets its own step size (2*eps, halved at checkpoints); it has no 'step_size' option")
        if not 0 < rho <= 1 or not 0 < momentum <= 1:
            raise ValueError(f"rho and momentum must be in (0, 1], got rho={rho}, momentum={momentum}")
        super().__init__(budget, **options)
        self.rho, self.momentum = float(rho), float(momentum)
        self.first, self.smallest, self.decrement = _schedule(self.steps)

    def init_state(self, x: torch.Tensor, state: AttackState) -> None:
        """The start point (see :meth:`Attack.init_state`) and η = 2·eps in ``state.aux``.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; sets ``var`` and ``aux["eta"]`` ``(B,)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks.base import AttackState
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> budget = Budget.linf(0.1)
            >>> state = AttackState.create(budget, x, torch.tensor([0.0]), None, None)
            >>> APGD(budget, random_start=False).init_state(x, state)
            >>> state.aux["eta"]
            tensor([0.2000])
        """
        super().init_state(x, state)
        state.aux.update(eta=2 * state.eps, x_old=state.var.clone(), k=self.first, counter=0)

    def _bookkeeping(self, state: AttackState, x_cur: torch.Tensor, grad: torch.Tensor,
                     gain: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Record the iterate just evaluated; at a checkpoint halve η and go back to the best point.

        Returns the (possibly reset) iterate and gradient to step from.
        """
        a = state.aux
        if t == 1:
            a.update(x_best=x_cur, grad_best=grad, gain_best=gain, gain_prev=gain, best_at_check=gain,
                     n_up=torch.zeros_like(gain), reduced=torch.ones_like(gain, dtype=torch.bool))
            return x_cur, grad
        improved = gain > a["gain_best"]
        a["x_best"] = torch.where(expand_to(improved, x_cur), x_cur, a["x_best"])
        a["grad_best"] = torch.where(expand_to(improved, grad), grad, a["grad_best"])
        a["gain_best"] = torch.where(improved, gain, a["gain_best"])
        a["n_up"] = a["n_up"] + (gain > a["gain_prev"]).to(gain.dtype)
        a["gain_prev"] = gain
        a["counter"] += 1
        if a["counter"] < a["k"]:
            return x_cur, grad
        oscillating = a["n_up"] <= a["k"] * self.rho                            # condition 1
        stalled = ~a["reduced"] & (a["best_at_check"] >= a["gain_best"])        # condition 2
        reduce = oscillating | stalled
        a.update(reduced=reduce, best_at_check=a["gain_best"], n_up=torch.zeros_like(gain), counter=0,
                 k=max(a["k"] - self.decrement, self.smallest))
        a["eta"] = torch.where(reduce, a["eta"] / 2, a["eta"])
        x_cur = torch.where(expand_to(reduce, x_cur), a["x_best"], x_cur)
        grad = torch.where(expand_to(reduce, grad), a["grad_best"], grad)
        return x_cur, grad

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """One APGD step with momentum; at a checkpoint first halve η and return to the best point.

        ``z = P(x_k + η · direction(grad))``, ``x_{k+1} = x_k + w (z - x_k) + (1 - w)(x_k - x_{k-1})``
        with ``w = momentum`` (1 at the first step); the loop then projects.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state (``var`` replaced; bookkeeping in ``aux``).
            grad: d(gain)/d(var), shape of ``state.var``.
            gain: ``(B,)`` gain of the current iterate (drives the checkpoints).
            t: the step, 1..T.

        Example:
            >>> import torch
            >>> from medrobust.attacks.base import AttackState
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 2, 2)
            >>> budget = Budget.linf(0.1)
            >>> attack = APGD(budget, random_start=False)
            >>> state = AttackState.create(budget, x, torch.tensor([0.0]), None, None)
            >>> attack.init_state(x, state)
            >>> attack.update(x, state, torch.ones_like(x), torch.zeros(1), t=1)
            >>> state.var.flatten()                  # a step of 2·eps, projected to eps
            tensor([0.1000, 0.1000, 0.1000, 0.1000])
        """
        x_cur, grad = self._bookkeeping(state, state.var.detach(), grad, gain, t)
        a = state.aux
        z = state.budget.project(x, x_cur + expand_to(a["eta"], x) * ascent_direction(grad, state), state.mask)
        w = 1.0 if t == 1 else self.momentum
        previous, a["x_old"] = a["x_old"], x_cur
        state.var = x_cur + (z - x_cur) * w + (x_cur - previous) * (1 - w)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", rho={self.rho}, momentum={self.momentum})"

