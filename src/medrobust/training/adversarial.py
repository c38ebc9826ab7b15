"""Voxel-domain adversarial training recipes: PGD-AT, TRADES, Fast-AT and Free-AT.

Each is only a batch loss on the shared loop (design.md section 6); the inner maximiser is
an attack of :mod:`medrobust.attacks`, with its budget stated in the units the user chose
(``eps_unit``: "1/255" of the valid range by default, "model", "raw" or "HU"). With
``per_channel`` (default: on for multi-channel z-scored data) a "1/255" budget and the valid
range are taken per (case, channel), as SEAT does (:mod:`medrobust.attacks.channel_ranges`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from medrobust.attacks.channel_ranges import ChannelRanges, attack_batch, channel_ranges_for
from medrobust.attacks.registry import get_attack
from medrobust.training.recipes import Recipe, StepInfo, is_classification, register_recipe, task_loss
from medrobust.units import Budget, budget_for_case, expand_to, per_sample


class _BudgetedRecipe(Recipe):
    """Holds an eps, its unit, norm and range rule; builds the budget of each batch."""

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf",
                 per_channel: bool | None = None) -> None:
        self.eps, self.eps_unit, self.norm, self.per_channel = float(eps), eps_unit, norm, per_channel
        budget_for_case(norm, eps, eps_unit, torch.tensor([[[0.0, 1.0]]]), self.intensity)  # fail now on bad eps

    def budget(self, x: torch.Tensor) -> Budget:
        return budget_for_case(self.norm, self.eps, self.eps_unit, x, self.intensity)

    def ranges(self, x: torch.Tensor) -> ChannelRanges | None:
        """The batch's per-(case, channel) ranges when the budget takes them, else None."""
        return channel_ranges_for(self.per_channel, x, self.intensity, self.eps_unit)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "eps_unit": self.eps_unit, "norm": self.norm, "per_channel": self.per_channel}


def _attack_loss(y: torch.Tensor) -> str:
    return "ce" if is_classification(y) else "dice_ce"


@register_recipe("pgd_at")
class PGDAdversarialTraining(_BudgetedRecipe):
    """Madry et al. 2018: loss = (1 - w)·L(x) + w·L(x_adv), x_adv from an engine attack.

    Args:
        adv_weight: w in [0, 1] (seed 002 uses 0.5; 1.0 is pure adversarial training).
        attack: attack name of the engine (default "pgd"); steps, step_size: its options.
    """

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf", adv_weight: float = 0.5,
                 steps: int = 10, step_size: float | None = None, attack: str = "pgd",
                 per_channel: bool | None = None) -> None:
        super().__init__(eps, eps_unit, norm, per_channel)
        if not 0.0 <= adv_weight <= 1.0:
            raise ValueError(f"adv_weight must be in [0, 1], got {adv_weight}")
        self.adv_weight, self.steps, self.step_size, self.attack = float(adv_weight), int(steps), step_size, attack
        self.passes_per_batch = self.steps + (2 if adv_weight < 1 else 1)

    @override
    def params(self) -> dict[str, Any]:
        return {**super().params(), "adv_weight": self.adv_weight, "steps": self.steps,
                "step_size": self.step_size, "attack": self.attack}

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch the recipe trains on: ``x_adv`` of the same shape as ``x``."""
        return attack_batch(lambda b: get_attack(self.attack, self.budget(b), steps=self.steps,
                                                 step_size=self.step_size, loss=_attack_loss(y)),
                            model, x, y, self.ranges(x))

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        x_adv = self.adversarial(model, x, y)
        adv = task_loss(model(x_adv), y)
        loss = self.adv_weight * adv
        logs = {"adv_loss": float(adv.detach())}
        if self.adv_weight < 1.0:
            clean = task_loss(model(x), y)
            loss = loss + (1.0 - self.adv_weight) * clean
            logs["clean_loss"] = float(clean.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs


def _kl_to_clean(logits_adv: torch.Tensor, probs_clean: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(clean ‖ adv) summed over classes, averaged over voxels: (B,)."""
    kl = F.kl_div(F.log_softmax(logits_adv, 1), probs_clean, reduction="none").sum(1)
    return kl.reshape(kl.shape[0], -1).mean(1)


@register_recipe("trades")
class TRADES(_BudgetedRecipe):
    """Zhang et al. 2019: L(x) + β·KL(f(x) ‖ f(x_adv)); the adversary maximises the KL.

    The inner maximisation is the engine's PGD with the KL to the (fixed) clean
    prediction as its loss. At x itself that KL is at its minimum (zero gradient), so the
    search starts at a random point of the ball (the reference code uses x + 0.001·N(0, 1)).
    """

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf", beta: float = 6.0,
                 steps: int = 10, step_size: float | None = None, per_channel: bool | None = None) -> None:
        super().__init__(eps, eps_unit, norm, per_channel)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta, self.steps, self.step_size = float(beta), int(steps), step_size
        self.passes_per_batch = self.steps + 2

    @override
    def params(self) -> dict[str, Any]:
        return {**super().params(), "beta": self.beta, "steps": self.steps, "step_size": self.step_size}

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probs_clean = F.softmax(model(x), 1)
        model.train(was_training)

        def kl_loss(logits: torch.Tensor, target: torch.Tensor, **_: Any) -> torch.Tensor:
            return _kl_to_clean(logits, probs_clean)

        x_adv = attack_batch(lambda b: get_attack("pgd", self.budget(b), steps=self.steps, step_size=self.step_size,
                                                  loss=kl_loss, random_start=True), model, x, y, self.ranges(x))
        logits_clean = model(x)
        natural = task_loss(logits_clean, y)
        robust = _kl_to_clean(model(x_adv), F.softmax(logits_clean, 1)).mean()
        loss = natural + self.beta * robust
        return loss, {"loss": float(loss.detach()), "clean_loss": float(natural.detach()),
                      "kl": float(robust.detach())}


@register_recipe("fast_at")
class FastAdversarialTraining(PGDAdversarialTraining):
    """Wong et al. 2020: one FGSM step of size α = 1.25·eps from a uniform random start.

    That is the engine's PGD with one step and a random start, returning its last iterate
    (the FGSM step, never the random start, and no forward to compare them); trains on
    x_adv only: two forwards per batch, one for the step and one for the loss.
    """

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf",
                 alpha_factor: float = 1.25, per_channel: bool | None = None) -> None:
        super().__init__(eps, eps_unit, norm, adv_weight=1.0, steps=1, step_size=alpha_factor * float(eps),
                         per_channel=per_channel)
        self.alpha_factor = alpha_factor

    @override
    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack_batch(lambda b: get_attack("pgd", self.budget(b), steps=1, step_size=self.step_size,
                                                 random_start=True, return_best=False, loss=_attack_loss(y)),
                            model, x, y, self.ranges(x))


@register_recipe("free_at")
class FreeAdversarialTraining(_BudgetedRecipe):
    """Shafahi et al. 2019: replay each minibatch m times, one backward for weights and input.

    One backward gives the parameter gradient and the input gradient, δ ← Π(δ + step·sign(∇δ)),
    carried across replays and to the next minibatch of the same shape.

    The step defaults to eps (in eps_unit), as in the paper. (The published Free-AT code of
    the seeds computes ``b_eps // 2``, which floors to 0 and trains on clean data.)
    Train for epochs/m epochs to keep the cost of standard training.
    """

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf", replays: int = 4,
                 step_size: float | None = None, per_channel: bool | None = None) -> None:
        super().__init__(eps, eps_unit, norm, per_channel)
        if replays < 1:
            raise ValueError(f"replays must be >= 1, got {replays}")
        self.replays = self.passes_per_batch = int(replays)
        self.step_size = float(eps) if step_size is None else float(step_size)
        self.delta: torch.Tensor | None = None
        # (x, x_adv, budget) of the batch, in per-channel unit coordinates when the budget takes them
        self._pending: tuple[torch.Tensor, torch.Tensor, Budget] | None = None
        self.last_delta_norm = 0.0

    @override
    def params(self) -> dict[str, Any]:
        return {**super().params(), "replays": self.replays, "step_size": self.step_size}

    def state_dict(self) -> dict[str, Any]:
        """The carried perturbation, so a resumed run continues with it."""
        return {} if self.delta is None else {"delta": self.delta}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta = state.get("delta")

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        ranges = self.ranges(x)
        base = x if ranges is None else ranges.to_unit(x)  # delta lives where the budget is stated
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x)
        self.delta = self.delta.to(x)  # a resumed delta comes back on the CPU
        budget = self.budget(base)
        x_adv = budget.project(base, base + self.delta).requires_grad_(True)
        self._pending = (base, x_adv, budget)
        loss = task_loss(model(x_adv if ranges is None else ranges.from_unit(x_adv)), y)
        self.last_delta_norm = float(budget.norm_of(x_adv.detach() - base).max())
        return loss, {"loss": float(loss.detach()), "delta_norm": self.last_delta_norm}

    @override
    def after_backward(self, step: StepInfo) -> None:
        if self._pending is None or self._pending[1].grad is None:
            raise RuntimeError("FreeAdversarialTraining.after_backward: no batch_loss backward to step from")
        x, x_adv, budget = self._pending
        grad = x_adv.grad
        assert grad is not None  # checked above
        if step.scaler is not None:
            grad = grad / step.scaler.get_scale()
        size = per_sample(budget.to_model(self.step_size), x.shape[0], x)
        if budget.norm == "linf":
            moved = x_adv.detach() + expand_to(size, x) * grad.sign()
        else:
            norm = grad.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            moved = x_adv.detach() + expand_to(size / norm, x) * grad
        self.delta = (budget.project(x, moved) - x).detach()
