"""Sign / normalised-gradient attacks: FGSM, BIM, PGD (Linf and L2) and MI-FGSM.

All run the loop of :mod:`medrobust.attacks.base`; the variable is the adversarial image
and each step is ``x_adv + alpha * direction(grad)`` followed by the projection onto the
Budget (norm ball ∩ valid range ∩ mask). The direction is ``sign(grad)`` for Linf budgets
and ``grad / ‖grad‖₂`` (over the mask) for L2 budgets. With the same eps, step size and
steps and ``return_best=False`` they reproduce torchattacks' FGSM, BIM, PGD, PGDL2 and
MIFGSM (tests/attacks/test_torchattacks_parity.py).
"""
from __future__ import annotations

from typing import Any

import torch

from medrobust.attacks.base import Attack, AttackState
from medrobust.units import Budget, expand_to

__all__ = ["FGSM", "BIM", "PGD", "MIFGSM", "ascent_direction"]


def ascent_direction(grad: torch.Tensor, state: AttackState) -> torch.Tensor:
    """``sign(grad)`` (Linf) or ``grad / (‖grad‖₂ + 1e-10)`` per sample over the mask (L2)."""
    if state.budget.norm == "linf":
        return grad.sign()
    g = grad * state.mask if state.mask is not None else grad
    n = g.reshape(g.shape[0], -1).norm(p=2, dim=1) + 1e-10
    return g / expand_to(n, g)


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), Linf or L2 by ``budget.norm``.

    ``PGD(budget, steps=20, loss="dice_ce")(model, x, y)``; starts at a uniformly random
    point of the ball unless ``random_start=False``. See :class:`Attack` for the options.
    """

    name = "pgd"
    default_random_start = True

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        state.var = torch.addcmul(state.var.detach(), state.alpha_x, ascent_direction(grad, state))


class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2017): PGD without random start."""

    name = "bim"
    default_random_start = False


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x
    (or from a random start if ``random_start=True``). Takes no ``steps``/``step_size``."""

    name = "fgsm"
    default_random_start = False
    uses_step_size = False

    def __init__(self, budget: Budget, **options: Any) -> None:
        for key in ("steps", "step_size"):
            if key in options:
                raise ValueError(f"FGSM takes one step of size eps; it has no {key!r} option")
        super().__init__(budget, steps=1, **options)

    def _alpha(self, x: torch.Tensor) -> torch.Tensor:
        return self.budget.eps_for(x)


class MIFGSM(PGD):
    """Momentum iterative FGSM (Dong et al. 2018): ``g_t = grad / mean|grad| + decay·g_{t-1}``
    (normalised per sample, as torchattacks does), step ``alpha · direction(g_t)``.

    Args:
        decay: momentum factor μ (default 1.0).
    """

    name = "mifgsm"
    default_random_start = False

    def __init__(self, budget: Budget, *, decay: float = 1.0, **options: Any) -> None:
        if not decay >= 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        super().__init__(budget, **options)
        self.decay = float(decay)

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        scale = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
        g = grad / scale.clamp_min(torch.finfo(grad.dtype).tiny)
        if t > 1:
            g = g + state.aux["momentum"] * self.decay
        state.aux["momentum"] = g
        state.var = torch.addcmul(state.var.detach(), state.alpha_x, ascent_direction(g, state))
