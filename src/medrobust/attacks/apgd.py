"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), Linf and L2, with CE or DLR loss.

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
    """Checkpoints w_j of a run of ``steps`` steps: after that many steps the step size is
    checked (before the next step), so only w_j < steps can affect the run."""
    first, smallest, decrement = _schedule(steps)
    out, k, at = [], first, first
    while at < steps:
        out.append(at)
        k = max(k - decrement, smallest)
        at += k
    return out


class APGD(Attack):
    """Auto-PGD; ``APGD(budget, steps=100, loss="dlr")(model, x, y)``.

    Args:
        rho: fraction of increasing steps below which the step size is halved (0.75).
        momentum: weight of the new step, 0.75 in the paper (the first step uses 1).
        Other options as :class:`Attack`; ``step_size`` is not used (it starts at 2·eps).
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
        super().init_state(x, state)
        state.aux.update(eta=2 * state.eps, x_old=state.var.clone(), k=self.first, counter=0)

    def _bookkeeping(self, state: AttackState, x_cur: torch.Tensor, grad: torch.Tensor,
                     gain: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Record the iterate just evaluated; at a checkpoint halve η and go back to the best
        point. Returns the (possibly reset) iterate and gradient to step from."""
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
        x_cur, grad = self._bookkeeping(state, state.var.detach(), grad, gain, t)
        a = state.aux
        z = state.budget.project(x, x_cur + expand_to(a["eta"], x) * ascent_direction(grad, state), state.mask)
        w = 1.0 if t == 1 else self.momentum
        previous, a["x_old"] = a["x_old"], x_cur
        state.var = x_cur + (z - x_cur) * w + (x_cur - previous) * (1 - w)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", rho={self.rho}, momentum={self.momentum})"

