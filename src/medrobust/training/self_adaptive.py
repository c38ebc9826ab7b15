"""Self-adaptive adversarial training (seed 001).

PGD-AT whose attack iterations follow a Lipschitz proxy, the mean absolute input gradient
(MAG) of the training loss per epoch.

The published code reads gradients after AMP scaling, so its signal moves with the loss
scale; here MAG is measured on the **unscaled** input gradient. Under fp16 AMP a step whose
scaled gradient overflowed (the scaler skips it) would add inf to the epoch's MAG and, at
epoch ``check_every + 1``, make the threshold inf for good (the published code has that
fault); such steps are left out of MAG and counted in the log column ``mag_skipped``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from medrobust.training.adversarial import PGDAdversarialTraining
from medrobust.training.distributed import mean_float
from medrobust.training.recipes import StepInfo, register_recipe


@dataclass
class IterationSchedule:
    """The published rule for the number of attack iterations.

    Start at ``iters`` = 1. At epoch ``check_every`` add one. At the next epoch set
    threshold = γ·MAG. Then at every later epoch with ``epoch % check_every == 0`` (6, 9,
    12, ... for check_every 3, as SEAT's ``adjust_adv_iteration``): if MAG > threshold and
    iters < max_iters: threshold = γ·MAG, iters += 1; elif MAG < threshold/γ and
    iters > 2: threshold = γ·MAG, iters -= 1. Epochs are counted from 1. A non-finite MAG
    (an epoch without one finite step) moves neither the threshold nor the iterations; the
    threshold is then set at the next epoch with a finite MAG.
    """

    check_every: int = 3
    gamma: float = 1.1
    max_iters: int = 10
    iters: int = 1
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.check_every < 1 or self.gamma <= 1.0 or self.max_iters < 2:
            raise ValueError(f"IterationSchedule needs check_every >= 1, gamma > 1, max_iters >= 2; "
                             f"got {self.check_every}, {self.gamma}, {self.max_iters}")

    def update(self, epoch: int, mag: float) -> int:
        """Apply the rule after ``epoch`` with that epoch's MAG.

        Args:
            epoch: the epoch just trained, counted from 1.
            mag: its mean absolute input gradient.

        Returns:
            The attack iterations for the next epoch.
        """
        if epoch == self.check_every:
            self.iters = min(self.iters + 1, self.max_iters)
        elif math.isfinite(mag):
            self._adapt(epoch, mag)
        return self.iters

    def _adapt(self, epoch: int, mag: float) -> None:
        """The threshold's first setting, then SEAT's check at multiples of ``check_every``."""
        if epoch <= self.check_every:
            return
        if self.threshold is None:  # epoch check_every + 1, or the first later one with a finite MAG
            self.threshold = self.gamma * mag
        elif epoch % self.check_every == 0:
            if mag > self.threshold and self.iters < self.max_iters:
                self.threshold, self.iters = self.gamma * mag, self.iters + 1
            elif mag < self.threshold / self.gamma and self.iters > 2:
                self.threshold, self.iters = self.gamma * mag, self.iters - 1


@register_recipe("self_adaptive")
class SelfAdaptiveAdversarialTraining(PGDAdversarialTraining):
    """PGD-AT with ``steps`` chosen per epoch by :class:`IterationSchedule`.

    Logs ``mag``, ``mag_skipped`` (steps left out of MAG: non-finite input gradient after
    unscaling), ``threshold`` and ``attack_iters`` per epoch (history.csv beside the
    checkpoint); the schedule is saved in every checkpoint so resume continues it.
    """

    def __init__(self, eps: float = 4.0, eps_unit: str = "1/255", norm: str = "linf", adv_weight: float = 0.5,
                 step_size: float | None = None, check_every: int = 3, gamma: float = 1.1,
                 max_iters: int = 10, per_channel: bool | None = None) -> None:
        super().__init__(eps, eps_unit, norm, adv_weight=adv_weight, steps=1, step_size=step_size,
                         per_channel=per_channel)
        self.schedule = IterationSchedule(check_every=check_every, gamma=gamma, max_iters=max_iters)
        self._mag_sum, self._mag_count, self._mag_skipped = 0.0, 0, 0
        self._x_adv: torch.Tensor | None = None

    @override
    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("steps")
        return {**out, "check_every": self.schedule.check_every, "gamma": self.schedule.gamma,
                "max_iters": self.schedule.max_iters}

    @override
    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.steps = self.schedule.iters
        self.passes_per_batch = self.steps + (2 if self.adv_weight < 1 else 1)
        x_adv = super().adversarial(model, x, y).requires_grad_(True)
        self._x_adv = x_adv
        return x_adv

    @override
    def after_backward(self, step: StepInfo) -> None:
        grad = self._x_adv.grad if self._x_adv is not None else None
        if grad is None:
            return
        if step.scaler is not None:  # un-scale AMP so the proxy does not move with the loss scale
            grad = grad / step.scaler.get_scale()
        # The training loss weights the adversarial term by adv_weight; MAG is of that term alone.
        mag = float(grad.abs().mean()) / max(self.adv_weight, 1e-12)
        if not math.isfinite(mag):  # an fp16 overflow: the scaler skips this step
            self._mag_skipped += 1
            return
        self._mag_sum += mag
        self._mag_count += 1

    @override
    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> dict[str, float]:
        local = self._mag_sum / self._mag_count if self._mag_count else math.nan
        mag = mean_float(local)  # one schedule for every DDP rank
        used, skipped = self.schedule.iters, self._mag_skipped
        self.schedule.update(epoch + 1, mag)
        self._mag_sum, self._mag_count, self._mag_skipped = 0.0, 0, 0
        threshold = self.schedule.threshold if self.schedule.threshold is not None else math.nan
        return {"mag": mag, "mag_skipped": float(skipped), "threshold": threshold, "attack_iters": float(used),
                "next_attack_iters": float(self.schedule.iters)}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"schedule": asdict(self.schedule)}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "schedule" in state:
            self.schedule = IterationSchedule(**state["schedule"])

