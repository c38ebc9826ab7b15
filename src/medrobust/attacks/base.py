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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import nn

from medrobust.attacks.outcome import KEEP_RULES, IterateTracker, KeepRule, sample_metric, target_metric
from medrobust.losses import STEP_DEPENDENT, get_loss
from medrobust.units import Budget, Scalar, expand_to, per_sample

__all__ = ["Attack", "AttackResult", "AttackState", "frozen", "sample_metric", "check_inputs"]

Verdict = tuple[torch.Tensor, "torch.Tensor | None"]  # (harm (B,), fails (B,) or None), see Attack._verdict


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


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, as a context manager.

    Restores every module's training flag and every parameter's ``requires_grad``
    afterwards, also on error. Every attack runs its model inside it.

    Args:
        model: any ``nn.Module``.

    Yields:
        The same model, frozen.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout()).train()
        >>> with frozen(model) as m:
        ...     m.training, m[0].weight.requires_grad
        (False, False)
        >>> model.training, model[0].weight.requires_grad
        (True, True)
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires in flags:
            p.requires_grad_(requires)


def check_inputs(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Validate images, labels and mask (design.md section 3) and normalise the mask.

    Args:
        x: float images ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        y: integer labels, ``(B,)`` (classification) or ``(B, 1, *spatial)`` (segmentation).
        mask: region the perturbation may change, any values (nonzero = inside), or None.

    Returns:
        The mask as 0/1 in x's dtype and device, or None.

    Raises:
        ValueError: naming ``x``, ``y`` or ``mask`` when its type or shape does not fit.

    Shape:
        - mask: ``(B, 1, *spatial)`` or any shape with x's number of axes that broadcasts to x.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 8, 8)
        >>> check_inputs(x, torch.tensor([0, 1]), None) is None
        True
        >>> check_inputs(x, torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.ones(2, 1, 8, 8) * 5).unique()
        tensor([1.])
        >>> check_inputs(x, torch.tensor([0.5, 1.0]), None)
        Traceback (most recent call last):
        ...
        ValueError: y must hold integer class indices, got dtype torch.float32
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (4, 5):
        raise ValueError(f"x must be a float tensor (B, C, H, W) or (B, C, D, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    seg_shape = (x.shape[0], 1, *x.shape[2:])
    if y.shape != (x.shape[0],) and y.shape != seg_shape:
        raise ValueError(f"y: labels of shape {tuple(y.shape)} fit neither task; allowed: ({x.shape[0]},) "
                         f"for classification or {seg_shape} for segmentation")
    if mask is None:
        return None
    try:
        ok = mask.ndim == x.ndim and torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask must have shape {seg_shape} or broadcast to x {tuple(x.shape)}, got {tuple(mask.shape)}")
    return (mask != 0).to(device=x.device, dtype=x.dtype)


class _ReducedPrecision(nn.Module):
    """``model``'s forward under autocast to ``dtype``, its logits returned in float32."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x).float()


class WholeVolume(Protocol):
    """A model that gives the whole-volume input gradient window by window (``SlidingWindow``)."""

    def loss_and_input_grad(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                            keep_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(logits or None, loss (B,), d loss.sum() / d x)."""
        ...


def _is_sliding_window(model: nn.Module) -> bool:
    try:  # lazy: the models part may be absent or half-built; a plain model needs none of it
        from medrobust.models.wrappers import SlidingWindow
    except ImportError:
        return False
    return isinstance(model, SlidingWindow)


def _reduced_precision(model: nn.Module, device_type: str, dtype: torch.dtype) -> nn.Module:
    """``model`` with its forward under autocast to ``dtype``, its logits float32.

    A SlidingWindow's network is wrapped instead, so the attack keeps its window-by-window
    gradient and the blending stays float32.
    """
    if not _is_sliding_window(model):
        return _ReducedPrecision(model, device_type, dtype)
    from medrobust.models.wrappers import SlidingWindow

    sw = cast(SlidingWindow, model)
    return SlidingWindow(_ReducedPrecision(sw.model, device_type, dtype), sw.roi_size, sw.overlap,
                         sw.sw_batch_size, sw.mode, sw.sigma_scale)


class Attack:
    """Base class: configuration, validation, the frozen-model context and the gradient loop.

    An attack is a small object holding its configuration; calling it runs the loop:
    ``attack(model, x, y, mask=None)`` returns the adversarial images (``attack.run`` also
    returns the loss history, see :meth:`run`). A new attack subclasses it and overrides
    :meth:`update` (and, if its variable is not the image, :meth:`init_state`,
    :meth:`perturb`, :meth:`project` and :meth:`finalize`).

    Args:
        budget: the threat model (norm, eps and valid range in model units; see units.py).
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

    # -- hooks (voxel attacks: the variable is the adversarial image) ----------------------
    def init_state(self, x: torch.Tensor, state: AttackState) -> None:
        """Set ``state.var``: x itself, or a uniform random point of the ball if random_start.

        Linf: uniform in the box; L2: a uniform direction (inside the mask) with a radius
        uniform in [0, eps]; then projected onto ball ∩ range ∩ mask.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` is set to ``(B, C, *spatial)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 4, 4), 0.5)
            >>> budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, torch.Generator().manual_seed(0))
            >>> PGD(budget).init_state(x, state)
            >>> bool((state.var - x).abs().max() <= 0.1), bool((state.var != x).any())
            (True, True)
        """
        if not self.random_start:
            state.var = x.clone()
            return
        gen = state.generator
        if state.budget.norm == "linf":
            delta = (2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * state.eps_x
        else:  # direction uniform on the sphere (inside the mask), radius uniform in [0, eps]
            d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            d = d * (state.mask if state.mask is not None else 1)
            n = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
            delta = d * expand_to(radius * state.eps / n, x)
        state.var = state.budget.project(x, x + delta, state.mask)

    def perturb(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The image the model sees, differentiable in ``state.var``.

        Voxel attacks return ``state.var`` itself; VAFA maps its quantisation table to the
        image.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state.

        Returns:
            The perturbed images ``(B, C, *spatial)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> budget = Budget.linf(0.1)
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x + 0.05
            >>> PGD(budget).perturb(x, state) is state.var
            True
        """
        return state.var

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """One ascent step on ``state.var`` along ``grad`` = d(gain)/d(var); subclasses override it.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; the step writes ``state.var``.
            grad: gradient of the gain w.r.t. ``state.var`` (its shape).
            gain: ``(B,)`` the loss (or -loss when targeted) at the current iterate.
            t: the step, 1..T.

        Raises:
            NotImplementedError: in the base class.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> budget = Budget.linf(0.1)
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x.clone()
            >>> PGD(budget).update(x, state, torch.ones_like(x), torch.zeros(1), t=1)
            >>> round(float(state.var.max()), 4)
            0.05
        """
        raise NotImplementedError

    def project(self, x: torch.Tensor, state: AttackState) -> None:
        """Project ``state.var`` onto ball ∩ range ∩ mask, in place on the state.

        Linf is inlined with the state's precomputed bounds (the same arithmetic as
        :meth:`Budget.project`, fewer kernels per step); L2 calls Budget.project.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` ``(B, C, *spatial)`` is replaced.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 4, 4), 0.95)
            >>> budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x + 0.5
            >>> PGD(budget).project(x, state)
            >>> round(float(state.var.max()), 4)                  # the range's top, not x + eps
            1.0
        """
        if state.budget.norm != "linf":
            state.var = state.budget.project(x, state.var, state.mask)
            return
        delta = state.var - x
        if state.mask is not None:
            delta = delta * state.mask
        out = x + torch.clamp(delta, state.neg_eps_x, state.eps_x)
        state.var = out if state.low_x is None else torch.clamp(out, state.low_x, state.high_x)

    def finalize(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The image of the last iterate of a restart, detached.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state after its last step.

        Returns:
            ``(B, C, *spatial)``, no graph.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> state = AttackState.create(Budget.linf(0.1), x, torch.tensor([0.05]), None, None)
            >>> state.var = (x + 0.05).requires_grad_(True)
            >>> PGD(Budget.linf(0.1)).finalize(x, state).requires_grad
            False
        """
        return self.perturb(x, state).detach()

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

    def _fails(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """(B,) True where the sample already fails; None when early stopping is off."""
        return self._verdict(logits, y)[1]

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
