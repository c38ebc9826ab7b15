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
    """The steepest-ascent direction of unit size in the budget's norm.

    ``sign(grad)`` for Linf, ``grad / (‖grad‖₂ + 1e-10)`` per sample over the mask for L2.

    Args:
        grad: gradient ``(B, C, *spatial)``.
        state: the attack state (gives ``budget.norm`` and ``mask``).

    Returns:
        The direction, shape of ``grad``.

    Example:
        >>> import torch
        >>> from medrobust.attacks.base import AttackState
        >>> from medrobust.units import Budget
        >>> g = torch.tensor([[[[3.0, -4.0]]]])               # (1, 1, 1, 2)
        >>> a = torch.tensor([0.1])
        >>> ascent_direction(g, AttackState.create(Budget.linf(0.1), g, a, None, None))
        tensor([[[[ 1., -1.]]]])
        >>> ascent_direction(g, AttackState.create(Budget.l2(0.1), g, a, None, None))
        tensor([[[[ 0.6000, -0.8000]]]])
    """
    if state.budget.norm == "linf":
        return grad.sign()
    g = grad * state.mask if state.mask is not None else grad
    n = g.reshape(g.shape[0], -1).norm(p=2, dim=1) + 1e-10
    return g / expand_to(n, g)


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), Linf or L2 by ``budget.norm``.

    ``PGD(budget, steps=20, loss="dice_ce")(model, x, y)``; starts at a uniformly random
    point of the ball unless ``random_start=False``. Each step is
    ``x_adv + step_size · direction(grad)`` (sign for Linf, unit L2 vector for L2), then
    the projection onto ball ∩ valid range ∩ mask; the best iterate per sample is returned.

    Args:
        budget: the threat model (:meth:`Budget.linf` or :meth:`Budget.l2`).
        steps: iterations (default 10).
        step_size: per step, in the budget's unit (HU, 1/255, ...); None (default):
            2.5·eps/steps.
        loss: "ce" (default), "dice", "dice_ce", "segpgd", "cospgd", "dlr", "margin" or a
            callable (see :mod:`medrobust.losses`).
        targeted: minimise the loss towards the target ``y`` (default False).
        restarts: independent random starts; the best iterate is kept (default 1).
        random_start: uniform start in the ball (default True).
        early_stop, return_best, seed: as :class:`~medrobust.attacks.base.Attack`.

    Raises:
        ValueError: bad options (see :class:`~medrobust.attacks.base.Attack`).

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import PGD
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W), model units in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) the clean prediction
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> x_adv = PGD(budget, steps=10, seed=0)(model, x, y)
        >>> bool((x_adv - x).abs().max() <= budget.eps + 1e-6)
        True
        >>> bool(((x_adv >= 0) & (x_adv <= 1)).all())        # inside the valid range
        True
        >>> l2 = Budget.l2(0.5, valid_range=(0.0, 1.0))
        >>> x_adv = PGD(l2, steps=10, seed=0)(model, x, y)
        >>> bool(((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all())
        True
    """

    name = "pgd"
    default_random_start = True

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """One step ``var + alpha · ascent_direction(grad)`` (projection follows in the loop).

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` is replaced.
            grad: d(gain)/d(var), shape of ``state.var``.
            gain: ``(B,)`` (unused).
            t: the step, 1..T (unused).

        Example:
            >>> import torch
            >>> from medrobust.attacks.base import AttackState
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 2, 2)
            >>> state = AttackState.create(Budget.linf(0.1), x, torch.tensor([0.05]), None, None)
            >>> state.var = x.clone()
            >>> PGD(Budget.linf(0.1)).update(x, state, -torch.ones_like(x), torch.zeros(1), 1)
            >>> state.var.flatten()
            tensor([-0.0500, -0.0500, -0.0500, -0.0500])
        """
        state.var = torch.addcmul(state.var.detach(), state.alpha_x, ascent_direction(grad, state))


class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2017): PGD without random start.

    Args:
        budget, steps, step_size, loss, targeted, restarts, early_stop, return_best, seed:
            as :class:`PGD`.
        random_start: default False (True makes it PGD).

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import BIM
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W), model units in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) the clean prediction
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> a = BIM(budget, steps=5)
        >>> a.random_start
        False
        >>> x_adv = a(model, x, y)
        >>> bool((x_adv - x).abs().max() <= budget.eps + 1e-6)
        True
        >>> bool((BIM(budget, steps=5)(model, x, y) == x_adv).all())    # deterministic
        True
    """

    name = "bim"
    default_random_start = False


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x.

    Starts from x (or from a random point of the ball if ``random_start=True``); takes no
    ``steps``/``step_size``. For an L2 budget the step is eps along the unit gradient.

    Args:
        budget: the threat model.
        **options: ``loss``, ``targeted``, ``restarts``, ``random_start`` (default False),
            ``early_stop``, ``return_best``, ``seed``, as :class:`PGD`.

    Raises:
        ValueError: when ``steps`` or ``step_size`` is given.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import FGSM
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W), model units in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) the clean prediction
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> x_adv = FGSM(budget)(model, x, y)
        >>> round(float((x_adv - x).abs().max()) * 255, 3)     # a full step of 8/255
        8.0
        >>> FGSM(budget, steps=3)
        Traceback (most recent call last):
        ...
        ValueError: FGSM takes one step of size eps; it has no 'steps' option
    """

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
    """Momentum iterative FGSM (Dong et al. 2018): ``g_t = grad / mean|grad| + decay·g_{t-1}``.

    The gradient is normalised per sample by its mean absolute value (as torchattacks
    does); each step is ``alpha · direction(g_t)``, then the projection.

    Args:
        budget: the threat model.
        decay: momentum factor μ >= 0 (default 1.0; 0 gives BIM).
        **options: ``steps``, ``step_size``, ``loss``, ``targeted``, ``restarts``,
            ``random_start`` (default False), ``early_stop``, ``return_best``, ``seed``, as
            :class:`PGD`.

    Raises:
        ValueError: ``decay`` < 0 or bad options.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import MIFGSM
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W), model units in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) the clean prediction
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> attack = MIFGSM(budget, steps=10, decay=1.0)
        >>> x_adv = attack(model, x, y)
        >>> bool((x_adv - x).abs().max() <= budget.eps + 1e-6)
        True
    """

    name = "mifgsm"
    default_random_start = False

    def __init__(self, budget: Budget, *, decay: float = 1.0, **options: Any) -> None:
        if not decay >= 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        super().__init__(budget, **options)
        self.decay = float(decay)

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """Momentum step: ``g_t = grad / mean|grad| + decay · g_{t-1}``, ``var += alpha · direction(g_t)``.

        The momentum is kept in ``state.aux["momentum"]``.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` is replaced.
            grad: d(gain)/d(var), shape of ``state.var``.
            gain: ``(B,)`` (unused).
            t: the step, 1..T (momentum starts at t = 1).

        Example:
            >>> import torch
            >>> from medrobust.attacks.base import AttackState
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 2, 2)
            >>> state = AttackState.create(Budget.linf(0.1), x, torch.tensor([0.05]), None, None)
            >>> state.var = x.clone()
            >>> MIFGSM(Budget.linf(0.1)).update(x, state, torch.tensor([[[[1.0, -3.0], [1.0, 1.0]]]]), torch.zeros(1), 1)
            >>> state.aux["momentum"]
            tensor([[[[ 0.6667, -2.0000],
                      [ 0.6667,  0.6667]]]])
        """
        scale = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
        g = grad / scale.clamp_min(torch.finfo(grad.dtype).tiny)
        if t > 1:
            g = g + state.aux["momentum"] * self.decay
        state.aux["momentum"] = g
        state.var = torch.addcmul(state.var.detach(), state.alpha_x, ascent_direction(g, state))
