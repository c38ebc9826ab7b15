"""Rounding with a surrogate derivative: VAFA's quantisation of the DCT coefficients.

:func:`surrogate_round` is ``torch.round`` in value with the derivative of a differentiable
surrogate: straight-through ("ste"), "cubic" or AdvDrop's annealed "tanh" (:data:`ROUNDINGS`).
"""
from __future__ import annotations

import torch

__all__ = ["ROUNDINGS", "surrogate_round"]

ROUNDINGS: tuple[str, ...] = ("ste", "cubic", "tanh")


def _tanh_sharpness(t: int, steps: int) -> tuple[float, float]:
    """(k, s) of AdvDrop's tanh rounding at step t.

    alpha = 0.1 + (t - 1) (1e-20 - 0.1) / steps, accumulated in float32 step by step as the
    published code does (exact to its last bit); ``k = log(2 / alpha - 1)``,
    ``s = 1 / (1 - alpha)``.
    """
    alpha, interval = torch.tensor(0.1), torch.tensor((1e-20 - 0.1) / steps)
    for _ in range(t - 1):
        alpha = alpha + interval
    return float(torch.log(2 / alpha - 1)), float(1 / (1 - alpha))


def surrogate_round(u: torch.Tensor, rounding: str, t: int = 1, steps: int = 1, soft: bool = False) -> torch.Tensor:
    """``torch.round(u)`` in value, with the derivative of a differentiable surrogate.

    With autograd off (or ``u`` not requiring grad) it is plain ``torch.round``.

    Args:
        u: values to round, any shape.
        rounding: the surrogate whose derivative is used: "ste" (1), "cubic" (of
            ``round(u) + (u - round(u))³``) or "tanh" (AdvDrop's annealed tanh).
        t: the current step, 1..steps (anneals "tanh": alpha = 0.1 (1 - (t - 1) / steps)
            in float32, as the published code).
        steps: the number of steps.
        soft: return the surrogate's own value (the published code's forward) instead
            of ``torch.round(u)``, while autograd records.

    Returns:
        ``torch.round(u)`` (or the surrogate, ``soft``), same shape as ``u``,
        differentiable through the surrogate.

    Example:
        >>> import torch
        >>> u = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> r = surrogate_round(u, "cubic")
        >>> r.sum().backward()
        >>> r.detach(), u.grad                     # 3 (u - round(u))² = 3 · 0.16
        (tensor([0., 2.]), tensor([0.4800, 0.4800]))
    """
    hard = torch.round(u)
    if not (torch.is_grad_enabled() and u.requires_grad):
        return hard
    if rounding == "ste":
        value = u
    elif rounding == "cubic":
        value = hard.detach() + (u - hard.detach()) ** 3
    else:  # AdvDrop's phi: tanh((u - floor(u) - 1/2) k) s, alpha from 0.1 towards 0
        k, s = _tanh_sharpness(t, steps)
        floor = torch.floor(u).detach()
        value = (torch.tanh((u - floor - 0.5) * k) * s + 1) / 2 + floor
    return value if soft else hard + (value - value.detach())
