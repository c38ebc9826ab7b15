"""VAFA's side of the shared attack loop: the quantisation table q is the optimised variable.

:class:`TableHooks` maps q to the quantised image ``lo + IDCT(round(DCT(x - lo) / Q) · Q)``
(``perturb``), steps and clamps q (``update``, ``project``) and maximises the loss minus
the SSIM term (``_gain``, ``_gain_and_grad``); :class:`~medrobust.attacks.frequency.VAFA`
adds its options, presets and statistics.
"""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackState, Verdict
from medrobust.attacks.dct import PadMode, block_dct, block_idct
from medrobust.attacks.forward import WholeVolume
from medrobust.attacks.frequency.published import PUBLISHED_SSIM_WINDOW
from medrobust.attacks.frequency.rounding import surrogate_round
from medrobust.attacks.ssim import SSIMReference

__all__ = ["TableHooks"]

_SLICE_FLOOR = 1e-6  # a slice narrower than this fraction of the valid range counts as constant


class TableHooks(Attack):
    """The hooks of the shared loop for VAFA (the variable is the table q); VAFA subclasses it.

    Attributes:
        block_size, slice_axis, pad, level_shift, rescale_slices: the block DCT and its image.
        q_min, q_max, q_init, q_step: the table's bounds, start and step (q units).
        rounding, soft_forward: the rounding surrogate and whether the forward uses its value.
        ssim, ssim_weight: the SSIM term.
    """

    block_size: tuple[int, ...]
    slice_axis: int
    pad: PadMode
    level_shift: float
    rescale_slices: bool
    q_min: float
    q_max: float
    q_init: float
    q_step: float
    rounding: str
    soft_forward: bool
    ssim: str
    ssim_weight: float
    _final: dict[str, torch.Tensor]

    def blocks_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """The block per spatial axis of ``x`` (1 on VAFA-2D's slice axis).

        Args:
            x: images ``(B, C, *spatial)``.

        Returns:
            One block size per spatial axis of ``x``.

        Raises:
            ValueError: naming ``block_size`` when it does not fit ``x``.

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> VAFA(block_size=(4, 4)).blocks_for(torch.zeros(1, 1, 8, 8, 8))   # VAFA-2D
            (4, 4, 1)
        """
        spatial = tuple(x.shape[2:])
        block = self.block_size
        if len(block) > len(spatial):
            raise ValueError(f"block_size {block} is 3D but x {tuple(x.shape)} is a 2D image; use a 2D block")
        if len(block) < len(spatial):
            axis = self.slice_axis % len(spatial)
            block = block[:axis] + (1,) + block[axis:]
        if any(b > s for b, s in zip(block, spatial)):
            raise ValueError(f"block_size {self.block_size} is larger than the image {spatial} on some axis")
        return block

    # -- hooks of the shared loop: the variable is the table q ----------------------------
    def init_state(self, x: torch.Tensor, state: AttackState) -> None:
        """Transform x once (block DCT) and set the table ``state.var`` to ``q_init``.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``var`` becomes q, ``(B, C, *lead, *n_blocks, *block)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> from medrobust.attacks.base import AttackState
            >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> state = AttackState.create(attack.budget, x, torch.zeros(1), None, None)
            >>> attack.init_state(x, state)
            >>> state.var.shape, state.var.unique()
            (torch.Size([1, 1, 2, 2, 2, 4, 4, 4]), tensor([20.]))
        """
        lo, hi = state.budget.range_for(x)
        block = self.blocks_for(x)
        shift = lo + self.level_shift / 255 * (hi - lo)
        coeffs = block_dct(x - shift, block, pad=self.pad)
        width = (hi - lo).reshape(-1)
        state.aux.update(block=block, coeffs=coeffs, lo=lo, hi=hi, shift=shift, t=1,
                         unit=(width / 255).reshape(-1, *([1] * (coeffs.ndim - 1))),
                         ssim=self._ssim_reference(x, width, block))
        state.var = torch.full_like(coeffs, self.q_init)

    def _ssim_reference(self, x: torch.Tensor, width: torch.Tensor, block: tuple[int, ...]) -> SSIMReference | None:
        """The SSIM term's reference (global or block-wise), None without the term."""
        if self.ssim_weight == 0:
            return None
        if self.ssim == "block":
            return SSIMReference(x, width, win_size=PUBLISHED_SSIM_WINDOW, block=block)
        return SSIMReference(x, width)

    def perturb(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The quantised image ``lo + IDCT(round(DCT(x - lo) / Q) · Q)``, clipped and masked.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state (q in ``var``, coefficients in ``aux``).

        Returns:
            ``(B, C, *spatial)``, differentiable in q through the rounding surrogate.

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> from medrobust.attacks.base import AttackState
            >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> state = AttackState.create(attack.budget, x, torch.zeros(1), None, None)
            >>> attack.init_state(x, state)
            >>> x_adv = attack.perturb(x, state)
            >>> x_adv.shape, bool(((x_adv >= 0) & (x_adv <= 1)).all())
            (torch.Size([1, 1, 8, 8, 8]), True)
        """
        a = state.aux
        step = state.var * a["unit"]  # Q in model units, >= q_min/255 of the range: no 0/0
        r = surrogate_round(a["coeffs"] / step, self.rounding, a["t"], self.steps, soft=self.soft_forward)
        x_adv = block_idct(r * step, a["block"], x.shape) + a["shift"]
        if self.rescale_slices:
            x_adv = self._rescale_slices(x_adv, a["lo"], a["hi"])
        x_adv = torch.minimum(torch.maximum(x_adv, a["lo"]), a["hi"])
        return x_adv if state.mask is None else x + state.mask * (x_adv - x)

    def _rescale_slices(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Each slice of ``v`` min-max mapped onto ``[lo, hi]``.

        A slice spans all spatial axes but ``slice_axis`` (2D: the image), as the published
        code's "normalize each (H, W) slice".
        """
        spatial = v.ndim - 2
        axis = self.slice_axis % spatial if spatial == 3 else None
        dims = tuple(2 + a for a in range(spatial) if a != axis)
        low, high = v.amin(dims, keepdim=True), v.amax(dims, keepdim=True)
        return lo + (hi - lo) * (v - low) / (high - low).clamp_min(_SLICE_FLOOR * (hi - lo))

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """Signed-gradient step on q: ``q + step_size · sign(grad)``.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``var`` (q) replaced.
            grad: d(objective)/dq, shape of q.
            gain: ``(B,)`` (unused).
            t: the step, 1..T (advances the tanh annealing).

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> from medrobust.attacks.base import AttackState
            >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> state = AttackState.create(attack.budget, x, torch.zeros(1), None, None)
            >>> attack.init_state(x, state)
            >>> attack.update(x, state, -torch.ones_like(state.var), torch.zeros(1), 1)
            >>> round(float(state.var.max()), 3)            # 20 - 2 · (20 - 1) / 3
            7.333
        """
        state.var = state.var.detach() + self.q_step * grad.sign()
        state.aux["t"] = t + 1

    def project(self, x: torch.Tensor, state: AttackState) -> None:
        """Clamp the table q to ``[q_min, q_max]``.

        Args:
            x: clean images ``(B, C, *spatial)`` (unused).
            state: the restart's state; ``var`` (q) clamped.

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> from medrobust.attacks.base import AttackState
            >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> state = AttackState.create(attack.budget, x, torch.zeros(1), None, None)
            >>> attack.init_state(x, state)
            >>> state.var = state.var * 10
            >>> attack.project(x, state)
            >>> float(state.var.max())
            20.0
        """
        state.var = state.var.clamp(self.q_min, self.q_max)

    def finalize(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The hard-rounded image of the last table, no graph; keeps its SSIM term and q.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state after its last step.

        Returns:
            ``(B, C, *spatial)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks.frequency import VAFA
            >>> from medrobust.attacks.base import AttackState
            >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
            >>> x = torch.rand(1, 1, 8, 8, 8)
            >>> state = AttackState.create(attack.budget, x, torch.zeros(1), None, None)
            >>> attack.init_state(x, state)
            >>> attack.finalize(x, state).requires_grad
            False
        """
        with torch.no_grad():
            x_adv = self.perturb(x, state)
            self._final = {"penalty": self._penalty(x_adv, state), "q": state.var.detach()}
        return x_adv

    # -- the objective: loss minus the SSIM term -----------------------------------------
    def _penalty(self, x_adv: torch.Tensor, state: AttackState) -> torch.Tensor:
        ref = state.aux["ssim"]
        if ref is None:
            return x_adv.new_zeros(x_adv.shape[0])
        return self.ssim_weight * (1 - ref(x_adv))

    def _gain(self, logits: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        # The shared loop scores finalize()'s image with _gain(logits) alone (it has no hook
        # for terms of the image), so finalize leaves that image's SSIM term here.
        gain = super()._gain(logits, y, t)
        penalty = self._final.pop("penalty", None)
        return gain if penalty is None else gain - penalty

    def _score(self, logits: torch.Tensor, gain: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gain  # _gain_and_grad already returns the final-step objective

    def _gain_and_grad(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: AttackState, t: int,
                       windowed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Verdict]:
        """(x_adv, objective (B,), d objective / d q, (harm, fails)).

        The objective includes ``-ssim_weight (1 - SSIM)``, which the shared loop's
        logits-only gain lacks.
        """
        q = state.var.detach().requires_grad_(True)
        state.var = q
        self._final.pop("penalty", None)
        seen: dict[str, Any] = {}

        def loss_of(z: torch.Tensor) -> torch.Tensor:
            gain = Attack._gain(self, z, y, t)
            with torch.no_grad():  # the final-step form, comparable across steps
                seen["gain"] = Attack._gain(self, z.detach(), y, self.steps) if self.step_dependent else gain.detach()
                seen["verdict"] = self._verdict(z.detach(), y)
            return gain

        grad: torch.Tensor | None
        with torch.enable_grad():
            x_adv = self.perturb(x, state)
            penalty = self._penalty(x_adv, state)
            if windowed:
                _, _, gx = cast(WholeVolume, model).loss_and_input_grad(x_adv.detach(), loss_of, keep_logits=False)
                outs, ups = [x_adv], [gx]
                if penalty.requires_grad:
                    outs, ups = outs + [penalty.sum()], ups + [-torch.ones_like(penalty.sum())]
                grad = torch.autograd.grad(outs, q, ups)[0]
            else:
                total = (loss_of(model(x_adv)) - penalty).sum()
                grad = torch.autograd.grad(total, q, allow_unused=True)[0] if total.requires_grad else None
        if grad is None:
            grad = torch.zeros_like(q)
        return x_adv.detach(), seen["gain"] - penalty.detach(), grad, seen["verdict"]
