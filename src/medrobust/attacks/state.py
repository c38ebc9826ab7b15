"""What the shared attack loop hands around: a restart's working state and the result of a run.

:class:`AttackState` holds the optimised variable and the budget's tensors broadcast once per
run (design.md section 5); :class:`AttackResult` is what :meth:`Attack.run
<medrobust.attacks.base.Attack.run>` returns.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from medrobust.units import Budget, expand_to

__all__ = ["AttackResult", "AttackState"]


@dataclass
class AttackResult:
    """What :meth:`Attack.run` returns.

    Attributes:
        x_adv: adversarial images, detached, shape/dtype/device of ``x``.
        loss_history: ``(R * (T + 1), B)``: the loss of every evaluated iterate, restart
            after restart (row 0 of a restart is its start point, row T its last iterate).
            Step-dependent losses (SegPGD) are recorded in their final-step form so that
            rows are comparable; Square records its best loss after each query. With
            ``return_best=False`` the last row is NaN: the returned last iterate is not
            evaluated (as in torchattacks), which saves one forward pass.
        best_loss: ``(B,)`` loss of the returned iterate (with ``keep="loss"`` the max of
            the history per sample, the min for targeted attacks); NaN with
            ``return_best=False``.
        seconds: wall time of the attack.
        extra: per-sample extras, each ``(B,)`` (Square: ``queries``; noise: ``linf_model``
            and ``l2_model``; VAFA: ``ssim``, ``psnr``, norms and table statistics).
        metric: ``(B,)`` :func:`~medrobust.attacks.outcome.sample_metric` of the returned
            iterate (:func:`~medrobust.attacks.outcome.target_metric` when targeted), or
            None where it was not evaluated.

    Shape:
        - x_adv: ``(B, C, *spatial)``, as ``x``.
        - loss_history: ``(R * (T + 1), B)`` for R restarts and T steps.
        - best_loss: ``(B,)``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import PGD
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(2, 1, 8, 8)                   # (B, C, H, W) in [0, 1]
        >>> y = model(x).argmax(1)                       # (B,) class indices
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> result = PGD(budget, steps=10, restarts=2, seed=0).run(model, x, y)
        >>> result.x_adv.shape, result.loss_history.shape, result.best_loss.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([22, 2]), torch.Size([2]))
        >>> bool((result.best_loss <= result.loss_history.amax(0)).all()), result.metric.shape
        (True, torch.Size([2]))
    """

    x_adv: torch.Tensor
    loss_history: torch.Tensor
    best_loss: torch.Tensor
    seconds: float
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    metric: torch.Tensor | None = None


@dataclass
class AttackState:
    """Working state of one restart, handed to the hooks of :class:`Attack`.

    ``budget`` lives on x's device/dtype; ``eps`` and ``alpha`` (step size) are ``(B,)`` in
    model units, ``*_x`` the same broadcast to ``(B, 1, ..., 1)`` once per run
    (``low_x``/``high_x`` None for an unbounded range); ``mask`` is 0/1 in x's dtype.
    Hooks set ``var`` and keep their own state in ``aux``.

    Attributes:
        budget: the attack's Budget, its tensors on x's device and dtype.
        eps, alpha: radius and step size ``(B,)``, model units.
        mask: ``(B, 1, *spatial)`` (or broadcastable to x) 0/1 mask, or None.
        generator: random generator of the start point / noise, or None (torch's RNG).
        eps_x, neg_eps_x, alpha_x: ``eps``, ``-eps`` and ``alpha`` as ``(B, 1, ..., 1)``.
        low_x, high_x: valid range as ``(B, 1, ..., 1)``, or None when unbounded.
        var: the optimised variable (the adversarial image for voxel attacks).
        aux: free per-restart state of an attack (APGD's step size, VAFA's coefficients).

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
        >>> state = AttackState.create(budget, x, torch.full((2,), 0.025), None, None)
        >>> state.eps.shape, state.eps_x.shape, state.low_x.shape
        (torch.Size([2]), torch.Size([2, 1, 1, 1]), torch.Size([2, 1, 1, 1]))
    """

    budget: Budget
    eps: torch.Tensor
    alpha: torch.Tensor
    mask: torch.Tensor | None
    generator: torch.Generator | None
    eps_x: torch.Tensor
    neg_eps_x: torch.Tensor
    alpha_x: torch.Tensor
    low_x: torch.Tensor | None
    high_x: torch.Tensor | None
    var: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    aux: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, budget: Budget, x: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor | None,
               generator: torch.Generator | None) -> AttackState:
        """State for images ``x`` with ``budget`` moved to x's device and dtype.

        Args:
            budget: the threat model (model units).
            x: clean images ``(B, C, *spatial)``; gives device, dtype and batch size.
            alpha: step size ``(B,)`` in model units.
            mask: 0/1 mask broadcastable to x (as :func:`check_inputs` returns), or None.
            generator: random generator for the start point, or None.

        Returns:
            An AttackState with ``var`` still empty (``init_state`` sets it).

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, torch.zeros(1, 1, 4, 4), torch.tensor([0.01]), None, None)
            >>> round(float(state.eps), 4), state.eps.dtype
            (0.0314, torch.float32)
        """
        bounded = bool(torch.isfinite(budget.low).any() or torch.isfinite(budget.high).any())  # on the host
        budget = dataclasses.replace(budget, eps=budget.eps.to(x), low=budget.low.to(x), high=budget.high.to(x))
        eps, (lo, hi) = budget.eps_for(x), budget.range_for(x)
        return cls(budget, eps, alpha, mask, generator, expand_to(eps, x), -expand_to(eps, x), expand_to(alpha, x),
                   lo if bounded else None, hi if bounded else None)
