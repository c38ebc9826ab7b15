"""PAdam-CE and PAdam-Cos: projected Adam on the gradient.

Halmosi, Mohos & Jelasity, "Evaluating the adversarial robustness of semantic segmentation:
trying harder pays off", ECCV 2024.

The published update (the authors' code, https://github.com/szegedai/Robust-Segmentation-Evaluation,
``rse/attacks.py`` ``padam`` with the settings of ``rse/__init__.py`` ``build_attacks``, commit
3e0d1fb) is
``torch.optim.Adam(lr=2/255, amsgrad=True, maximize=True)`` with its default β = (0.9, 0.999)
and ε = 1e-8 on the perturbation δ, 200 steps at eps = 8/255, from a uniform random start in
the L-inf ball. Per step t = 1..T, with g_t the gradient of the loss (no sign):

    m_t = β1 m_{t-1} + (1 - β1) g_t,   v_t = β2 v_{t-1} + (1 - β2) g_t²,   v̄_t = max(v̄_{t-1}, v_t)
    δ  <- δ + lr / (1 - β1^t) · m_t / (sqrt(v̄_t) / sqrt(1 - β2^t) + ε)
    δ  <- clip(δ, -eps, eps), then x + δ clipped to the valid range.

The step size is not tuned per model: Adam's normalisation makes each coordinate's step about
lr whatever the gradient's scale, and lr is fixed (2/255 = eps/4). The moments live in
``state.aux`` and are not touched by the projection. Losses: PAdam-CE maximises the
cross-entropy, PAdam-Cos the cosine distance ``1 - cos(logits, one_hot(y))`` per voxel
(:func:`medrobust.losses.cosine_distance`, on the raw logits as published; CosPGD's loss, ``losses.cospgd``,
weights the CE by the cosine of the softmax instead).

Differences from the published code, all stated: lr = eps/4 for any eps (2/255 at 8/255);
for an L2 budget, which the paper does not use, lr = eps / (4 sqrt(d)) with d the number of
voxels that may change, so that a step moves about a quarter of the ball as in L-inf, and the
projection is onto the L2 ball; the loss is a mean per sample (the reference averages over
the batch: its gradient is B times smaller, which Adam cancels up to ε, so here samples do
not influence each other); the iterate kept is the one with the lowest Dice (the reference
returns the last; ``return_best=False`` gives the last, as published).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from medrobust.attacks.base import Attack, AttackState
from medrobust.attacks.registry import register_attack
from medrobust.losses import cosine_distance
from medrobust.units import Budget, expand_to

__all__ = ["PAdam"]

PAPER_STEPS = 200  # the published number of steps of PAdam-CE and PAdam-Cos
LR_FRACTION = 0.25  # the published learning rate 2/255 at eps = 8/255


class PAdam(Attack):
    """Projected Adam (AMSGrad) on the raw gradient, as published for PAdam-CE / PAdam-Cos.

    ``PAdam(budget, loss="ce")(model, x, y)``; the update and its defaults are in the module
    docstring. ``padam-ce`` and ``padam-cos`` in the registry fix the loss.

    Args:
        budget: the threat model (L-inf as published, or L2).
        betas: Adam's (β1, β2), default (0.9, 0.999) as published.
        adam_eps: Adam's ε in the denominator, default 1e-8 as published.
        **options: ``steps`` (default 200, as published), ``step_size`` (Adam's learning
            rate in the budget's unit; default eps/4 for L-inf, eps/(4 sqrt(d)) for L2),
            ``loss`` ("ce" default; :func:`medrobust.losses.cosine_distance` for PAdam-Cos; any loss of
            :mod:`medrobust.losses`), ``targeted``, ``restarts``, ``random_start``
            (default True), ``early_stop``, ``return_best``, ``keep``, ``seed``, as
            :class:`~medrobust.attacks.base.Attack`.

    Raises:
        ValueError: betas outside [0, 1), adam_eps <= 0, or bad options.

    Shape:
        - x: ``(B, C, *spatial)``, model units; y: ``(B,)`` or ``(B, 1, *spatial)`` int labels.
        - mask (optional): ``(B, 1, *spatial)``.
        - output: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Conv2d(1, 3, 3, padding=1)            # a tiny segmenter
        >>> x = torch.rand(2, 1, 8, 8)
        >>> y = model(x).argmax(1, keepdim=True)                   # (B, 1, H, W) labels
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> result = PAdam(budget, steps=20, seed=0).run(model, x, y)
        >>> bool((result.x_adv - x).abs().max() <= budget.eps + 1e-6), bool(result.metric.max() < 1)
        (True, True)
    """

    name = "padam"
    default_random_start = True

    def __init__(self, budget: Budget, *, betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 **options: Any) -> None:
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {adam_eps!r}")
        options.setdefault("steps", PAPER_STEPS)
        super().__init__(budget, **options)
        self.betas, self.adam_eps = (float(betas[0]), float(betas[1])), float(adam_eps)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", betas={self.betas})"

    def _lr(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """Adam's learning rate per sample ``(B,)`` in model units (module docstring)."""
        if self.step_size is not None:
            return state.alpha
        if state.budget.norm == "linf":
            return LR_FRACTION * state.eps
        if state.mask is None:
            d = x.new_full((x.shape[0],), float(x[0].numel()))
        else:
            d = torch.broadcast_to(state.mask, x.shape).reshape(x.shape[0], -1).sum(1).clamp_min(1.0)
        return LR_FRACTION * state.eps / d.sqrt()

    def init_state(self, x: torch.Tensor, state: AttackState) -> None:
        """The start point (see :meth:`Attack.init_state`), zero Adam moments and the learning rate.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; sets ``var`` and ``aux`` ``m``, ``v``, ``v_max``
                (shape of x) and ``lr`` ``(B, 1, ..., 1)``.

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 4, 4), 0.5)
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, x, torch.tensor([0.0]), None, None)
            >>> PAdam(budget, random_start=False).init_state(x, state)
            >>> round(float(state.aux["lr"]) * 255, 4), float(state.aux["m"].abs().sum())
            (2.0, 0.0)
        """
        super().init_state(x, state)
        zeros = torch.zeros_like(state.var)
        state.aux.update(m=zeros, v=zeros.clone(), v_max=zeros.clone(), lr=expand_to(self._lr(x, state), x))

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """One AMSGrad ascent step on ``state.var`` (the loop then projects).

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state (``var`` replaced; moments in ``aux``).
            grad: d(gain)/d(var), shape of ``state.var``.
            gain: ``(B,)`` (unused).
            t: the step, 1..T (Adam's bias corrections).

        Example:
            >>> import torch
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 1, 2), 0.5)
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
            >>> attack = PAdam(budget, random_start=False)
            >>> state = AttackState.create(budget, x, torch.tensor([0.0]), None, None)
            >>> attack.init_state(x, state)
            >>> attack.update(x, state, torch.tensor([[[[1e-3, -2.0]]]]), torch.zeros(1), t=1)
            >>> ((state.var - x) * 255).round(decimals=3)    # first step: lr * sign(g), any scale
            tensor([[[[ 2., -2.]]]])
        """
        b1, b2 = self.betas
        a = state.aux
        a["m"].mul_(b1).add_(grad, alpha=1 - b1)
        a["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        torch.maximum(a["v_max"], a["v"], out=a["v_max"])
        denom = (a["v_max"].sqrt() / math.sqrt(1 - b2 ** t)).add_(self.adam_eps)
        state.var = state.var + (a["lr"] / (1 - b1 ** t)) * a["m"] / denom


def _padam_with(loss: str, fn: Any) -> Any:
    def make(budget: Budget, **options: Any) -> Attack:
        if "loss" in options:
            raise ValueError(f"loss: padam-{loss} uses the {loss} loss of the paper; it has no 'loss' option")
        return PAdam(budget, loss=fn, **options)
    make.__name__ = f"padam_{loss}"
    return make


register_attack("padam-ce")(_padam_with("ce", "ce"))
register_attack("padam-cos")(_padam_with("cos", cosine_distance))
