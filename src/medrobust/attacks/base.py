"""The shared attack loop (design.md section 5): one loop, small overridable hooks.

An attack optimises ``state.var`` (the adversarial image for voxel attacks; VAFA's
quantisation table) through hooks: ``init_state(x, state)`` sets it; ``perturb(x, state)``
maps it differentiably to the image; ``update(x, state, grad, gain, t)`` takes one ascent
step; ``project(x, state)`` returns to the feasible set (ball ∩ range ∩ mask);
``finalize(x, state)`` gives the image of the last iterate.

The loop runs ``steps`` times {perturb, forward, loss, gradient w.r.t. the variable only,
track, update, project}, evaluates the last iterate once more (unless ``return_best=False``:
then it is returned unevaluated, as torchattacks does), and keeps per sample the
iterate that hurts the metric most over all restarts (``keep="metric"``; the highest loss
among equals) or the one with the highest loss (``keep="loss"``), see
:mod:`medrobust.attacks.outcome`. Tracking uses the forward that also gives the gradient
(the iterate *before* the step): no extra forward, no host sync. ``gain`` = loss, or -loss
when targeted.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from medrobust.attacks.forward import WholeVolume, _is_sliding_window, _reduced_precision
from medrobust.attacks.guards import check_inputs, frozen
from medrobust.attacks.outcome import KEEP_RULES, IterateTracker, KeepRule, sample_metric, target_metric
from medrobust.attacks.state import AttackResult, AttackState
from medrobust.attacks.voxel_hooks import VoxelHooks
from medrobust.losses import STEP_DEPENDENT, get_loss
from medrobust.units import Budget, Scalar, expand_to, per_sample

__all__ = ["Attack", "AttackResult", "AttackState", "frozen", "sample_metric", "check_inputs"]

Verdict = tuple[torch.Tensor, "torch.Tensor | None"]  # (harm (B,), fails (B,) or None), see Attack._verdict


class Attack(VoxelHooks):
    """Base class: configuration, validation, the frozen-model context and the gradient loop.

    An attack is a small object holding its configuration; calling it runs the loop:
    ``attack(model, x, y, mask=None)`` returns the adversarial images (``attack.run`` also
    returns the loss history, see :meth:`run`). A new attack subclasses it and overrides
    :meth:`update` (and, if its variable is not the image, :meth:`init_state`,
    :meth:`perturb`, :meth:`project` and :meth:`finalize`).

    Args:
        budget: the threat model (norm, eps and valid range in model units; see :mod:`medrobust.units`).
        steps: iterations T >= 1 (default 10).
        step_size: in the budget's unit (e.g. HU or 1/255); ``None`` (default) gives
            2.5·eps/steps. A warning is issued when step_size·steps < eps (the iterate
            could not reach the ball's surface).
        loss: a name of :func:`medrobust.losses.get_loss` ("ce" (default), "dice",
            "dice_ce", "segpgd", "cospgd", "dlr", "margin") or a callable of that signature,
            ``loss(logits, y, *, step, total_steps) -> (B,)``, maximised.
        targeted: ``y`` is the target and the loss is minimised (default False).
        restarts: independent runs (default 1); the worst iterate over all of them (by
            ``keep``) is returned.
        random_start: start uniformly in the ball (``None``: the attack's default; True for
            PGD and APGD, False for the others).
        early_stop: stop updating a sample once it fails. Classification: ``True`` (fails =
            misclassified, or target reached). Segmentation: a Dice threshold in [0, 1]
            (fails = Dice <= threshold; targeted: the fraction of voxels at their target
            >= 1 - threshold).
            The returned iterate of a failed sample is its first failing one.
        return_best: return the kept iterate (default; costs one forward pass more than
            the steps, to evaluate the last iterate) or the last one, unevaluated (as
            torchattacks).
        keep: which iterate is kept per sample (:mod:`medrobust.attacks.outcome`):
            ``"metric"`` (default) the one that hurts the metric most (a misclassified
            iterate, the lowest foreground Dice; the highest loss among equals), or
            ``"loss"`` the highest loss (lowest when targeted).
        seed: seeds the random start (a generator on x's device); ``None`` uses torch's RNG.

    Raises:
        ValueError: a budget that is not a Budget, steps or restarts < 1, a bad early_stop
            or step_size, an unknown loss name or keep rule.

    Attributes:
        name: the attack's short name (class attribute; "pgd", "apgd", ...).
        default_random_start: the start when ``random_start=None`` (class attribute).
        uses_step_size: False for attacks that set their own step (no step_size warning).
        effort_unit: what ``steps`` counts in descriptions (``"steps"``; Square: ``"queries"``).

    Shape:
        - model: maps ``x`` to logits ``(B, K)`` or ``(B, K, *spatial)``.
        - x: ``(B, C, *spatial)`` float, model units (2D or 3D).
        - y: ``(B,)`` (classification) or ``(B, 1, *spatial)`` (segmentation), int labels
          (targets when ``targeted``).
        - mask: ``(B, 1, *spatial)`` or broadcastable to x, optional.
        - output of ``attack(model, x, y)``: ``(B, C, *spatial)``, as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.units import Budget
        >>> class SignStep(Attack):                     # a new attack: one hook
        ...     def update(self, x, state, grad, gain, t):
        ...         state.var = state.var + state.alpha_x * grad.sign()
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 2])
        >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
        >>> attack = SignStep(budget, steps=5)
        >>> attack
        SignStep(linf eps=8.0 1/255, steps=5, loss='ce', targeted=False, restarts=1, random_start=False)
        >>> x_adv = attack(model, x, y)
        >>> x_adv.shape
        torch.Size([2, 1, 8, 8])
        >>> bool((x_adv - x).abs().max() <= budget.eps + 1e-6), bool(x_adv.min() >= 0)
        (True, True)
    """

    name = "attack"
    default_random_start = False
    uses_step_size = True
    effort_unit = "steps"  # what ``steps`` counts: Square counts queries

    def __init__(self, budget: Budget, *, steps: int = 10, step_size: Scalar | None = None,
                 loss: str | Callable[..., torch.Tensor] = "ce", targeted: bool = False, restarts: int = 1,
                 random_start: bool | None = None, early_stop: bool | float = False, return_best: bool = True,
                 keep: KeepRule = "metric", seed: int | None = None) -> None:
        if not isinstance(budget, Budget):
            raise ValueError(f"budget must be a medrobust.units.Budget, got {type(budget).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
        if not isinstance(early_stop, bool) and not (isinstance(early_stop, (int, float)) and 0 <= early_stop <= 1):
            raise ValueError(f"early_stop must be a bool or a Dice threshold in [0, 1], got {early_stop!r}")
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, got {keep!r}")
        if step_size is not None:
            budget.to_model(step_size)  # validates: finite and >= 0
        self.budget, self.steps, self.step_size = budget, steps, step_size
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = get_loss(loss, targeted=bool(targeted)) if isinstance(loss, str) else loss
        self.step_dependent = isinstance(loss, str) and loss in STEP_DEPENDENT
        self.targeted, self.restarts, self.early_stop = bool(targeted), restarts, early_stop
        self.random_start = self.default_random_start if random_start is None else bool(random_start)
        self.return_best, self.keep, self.seed = bool(return_best), keep, seed

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.budget.describe()}, steps={self.steps}, loss={self.loss_name!r}, "
                f"targeted={self.targeted}, restarts={self.restarts}, random_start={self.random_start})")

    def describe(self) -> str:
        """How the attack runs, in words, for reports (the budget aside).

        Returns:
            e.g. ``"pgd: 10 steps, loss ce, 1 restart, random start; keeps the iterate that
            hurts the metric most"``.

        Example:
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> PGD(Budget.linf(0.1), steps=5, keep="loss").describe()
            'pgd: 5 steps, loss ce, 1 restart, random start; keeps the highest-loss iterate'
        """
        parts = [f"{self.steps} {self.effort_unit}", f"loss {self.loss_name}", f"{self.restarts} restart{'s' * (self.restarts != 1)}"]
        parts += ["random start"] * self.random_start + ["targeted"] * self.targeted
        rule = ("the last iterate" if not self.return_best else
                "the iterate that hurts the metric most" if self.keep == "metric" else
                f"the {'lowest' if self.targeted else 'highest'}-loss iterate")
        return f"{self.name}: {', '.join(parts)}; keeps {rule}"

    # -- public entry points -------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial images ``(B, C, *spatial)``: ``self.run(model, x, y, mask).x_adv``."""
        return self.run(model, x, y, mask).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            mask: torch.Tensor | None = None) -> AttackResult:
        """Attack ``model`` at images ``x`` (model units) with labels (or targets) ``y``.

        ``x`` is never modified; the model's training and ``requires_grad`` flags are
        restored and no gradient is left on its parameters.

        Args:
            model: maps images to logits (any ``nn.Module``; a :class:`SlidingWindow` gets
                the whole-volume gradient at one window's memory).
            x: clean images, model units, inside the budget's valid range.
            y: labels, or targets when ``targeted``.
            mask: limits the perturbation to its nonzero voxels; None: everywhere.

        Returns:
            An :class:`AttackResult`: ``x_adv``, ``loss_history``, ``best_loss``,
            ``seconds``, ``extra``.

        Raises:
            ValueError: bad ``x``/``y``/``mask`` (see :func:`check_inputs`), or
                ``early_stop=True`` with segmentation labels.

        Shape:
            - x: ``(B, C, *spatial)``; y: ``(B,)`` or ``(B, 1, *spatial)``;
              mask: ``(B, 1, *spatial)``.
            - result.x_adv: as ``x``; result.loss_history: ``(R * (T + 1), B)``;
              result.best_loss: ``(B,)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> _ = torch.manual_seed(0)
            >>> model = torch.nn.Conv3d(1, 3, 3, padding=1)          # a tiny segmenter
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> y = torch.randint(0, 3, (1, 1, 8, 8, 8))
            >>> mask = torch.zeros(1, 1, 8, 8, 8); mask[..., 2:6, 2:6, 2:6] = 1
            >>> budget = Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0))
            >>> result = PGD(budget, steps=5, loss="dice_ce", seed=0).run(model, x, y, mask)
            >>> result.loss_history.shape
            torch.Size([6, 1])
            >>> bool(((result.x_adv - x) * (1 - mask)).abs().max() == 0)     # nothing outside
            True
            >>> bool(result.best_loss >= result.loss_history[0])
            True
        """
        mask = check_inputs(x, y, mask)
        y = y.to(device=x.device, dtype=torch.long)
        if y.ndim > 1 and self.early_stop is True:
            raise ValueError("early_stop=True is for classification; for segmentation give a Dice threshold in [0, 1]")
        alpha = self._alpha(x)
        gen = None if self.seed is None else torch.Generator(device=x.device).manual_seed(int(self.seed))
        start = time.perf_counter()
        device_type = x.device.type
        amp = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        # Under a caller's autocast only the model's forward keeps the reduced precision: the
        # loss, the step, the projection (and VAFA's DCT and quantisation) run in float32.
        with frozen(model), torch.autocast(device_type, enabled=False):
            net = model if amp is None else _reduced_precision(model, device_type, amp)
            result = self._attack(net, x.detach(), y, AttackState.create(self.budget, x, alpha, mask, gen))
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        result.seconds = time.perf_counter() - start
        return result

    def _alpha(self, x: torch.Tensor) -> torch.Tensor:
        """Step size (B,) in model units; warns when step_size * steps < eps."""
        eps = per_sample(self.budget.eps, x.shape[0])
        if self.step_size is None:
            alpha = 2.5 * eps / self.steps
        else:
            alpha = per_sample(self.budget.to_model(self.step_size), x.shape[0])
            if self.uses_step_size and bool((alpha * self.steps < eps * (1 - 1e-9)).any()):
                warnings.warn(f"{type(self).__name__}: step_size*steps = {(alpha * self.steps).tolist()} < eps = "
                              f"{eps.tolist()} (model units): the attack cannot reach the budget's boundary",
                              stacklevel=3)
        return alpha.to(x)

    # -- the loop --------------------------------------------------------------------------
    def _gain(self, logits: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        loss = self.loss_fn(logits, y, step=t, total_steps=self.steps)
        return -loss if self.targeted else loss

    def _score(self, logits: torch.Tensor, gain: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Tracking score (gain form): the loss in its final-step form."""
        return self._gain(logits, y, self.steps) if self.step_dependent else gain

    def _verdict(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(harm (B,), fails (B,) or None when early stopping is off), on the logits' device.

        harm is the sample metric negated, or the target metric when targeted (higher = worse
        for the model).
        """
        metric = target_metric(logits, y) if self.targeted else sample_metric(logits, y)
        harm = metric if self.targeted else -metric
        if self.early_stop is False:
            return harm, None
        if y.ndim == 1:
            return harm, metric == 1 if self.targeted else metric == 0
        thr = float(self.early_stop)
        return harm, metric >= 1 - thr if self.targeted else metric <= thr

    def _gain_and_grad(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: AttackState, t: int,
                       windowed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Verdict]:
        """(x_adv, tracking score (B,), d gain / d var, (harm, fails)), detached.

        Through SlidingWindow the score and the verdict are read inside the loss, so the
        volume's logits are freed before the window-by-window backward.
        """
        state.var = var = state.var.detach().requires_grad_(True)
        with torch.enable_grad():
            x_adv = self.perturb(x, state)
            if windowed:
                seen: dict[str, Any] = {}

                def loss_of(z: torch.Tensor) -> torch.Tensor:
                    gain = self._gain(z, y, t)
                    with torch.no_grad():
                        seen["score"] = self._score(z.detach(), gain.detach(), y)
                        seen["verdict"] = self._verdict(z.detach(), y)
                    return gain

                _, _, gx = cast(WholeVolume, model).loss_and_input_grad(x_adv.detach(), loss_of, keep_logits=False)
                grad = gx if x_adv is var else torch.autograd.grad(x_adv, var, gx)[0]
                return x_adv.detach(), seen["score"], grad, seen["verdict"]
            logits = model(x_adv)
            gain = self._gain(logits, y, t)
            found = torch.autograd.grad(gain.sum(), var, allow_unused=True)[0] if gain.requires_grad else None
        # None: the loss does not depend on the input (a detaching model)
        grad = torch.zeros_like(var) if found is None else found
        with torch.no_grad():
            logits = logits.detach()
            return x_adv.detach(), self._score(logits, gain.detach(), y), grad, self._verdict(logits, y)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        B, T = x.shape[0], self.steps
        sign = -1.0 if self.targeted else 1.0
        windowed = _is_sliding_window(model)
        history: list[torch.Tensor] = []
        kept = IterateTracker.start(x, self.keep, early_stop=self.early_stop is not False)
        last_x = x
        for restart in range(self.restarts):
            state = dataclasses.replace(base, aux={})
            self.init_state(x, state)
            for t in range(1, T + 1):
                x_adv, score, grad, (harm, fails) = self._gain_and_grad(model, x, y, state, t, windowed)
                history.append(score)
                kept.offer(x_adv, score, harm, fails)
                with torch.no_grad():
                    before = state.var.detach()
                    self.update(x, state, grad, score, t)
                    self.project(x, state)
                    if kept.done is not None:
                        state.var = torch.where(expand_to(kept.done, before), before, state.var)
            with torch.no_grad():
                last_x = self.finalize(x, state)
                if not self.return_best and restart == self.restarts - 1:
                    history.append(x.new_full((B,), math.nan))  # returned as it is, never evaluated
                    break
                logits = model(last_x)
                score = self._gain(logits, y, T)
                history.append(score)
                kept.offer(last_x, score, *self._verdict(logits, y))
                del logits
            if kept.done is not None and bool(kept.done.all()):
                break
        rows = torch.stack(history) * sign
        if not self.return_best:
            return AttackResult(last_x.detach(), rows, rows[-1], 0.0)
        metric = kept.harm if self.targeted else -kept.harm
        return AttackResult(kept.x.detach(), rows, kept.gain * sign, 0.0, metric=metric)
