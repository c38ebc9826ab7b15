"""VAFA: the volumetric adversarial frequency attack (Hanif et al., MICCAI 2023), 2D and 3D.

``X' = lo + IDCT(round(DCT(X - lo) / Q) * Q)`` over non-overlapping blocks, clipped to the
valid range ``[lo, hi]``, with a quantisation table ``Q = q * (hi - lo) / 255``: ``q`` is
in units of 1/255 of the valid range, so ``q = 1`` is 8-bit precision (almost lossless)
and ``q_max = 20`` means what it does in the paper, whatever the model units are.

- ``q`` has one entry per sample, channel, block and DCT coefficient (the shape of
  :func:`medrobust.attacks.dct.block_dct`'s output), ``q_min <= q <= q_max``, starting at
  ``q_init`` (default q_max; q = 1 is the identity up to 8-bit rounding, but from there the
  search does not move: the rounding error, the only gradient w.r.t. q, is noise).
- Objective (maximised): ``loss(M(X'), Y) - ssim_weight * (1 - SSIM(X, X'))`` per sample
  (the Dice loss by default, so Dice falls), by signed-gradient steps on ``q`` of
  ``step_size`` (q units; default ``2 (q_max - q_min) / steps``, so q can cross its range
  in half the steps), then clamped to ``[q_min, q_max]``.
- Rounding: the forward pass always uses **hard** rounding (``torch.round``), so every
  iterate the model sees, every tracked iterate and the returned image are hard-rounded
  images, at no extra forward; ``rounding`` picks the surrogate derivative of the
  search: ``"ste"`` (straight-through, 1), ``"cubic"`` (of ``round(u) + (u - round(u))³``)
  or ``"tanh"`` (AdvDrop's annealed tanh rounding, sharpening from α = 0.1 towards 0
  over the steps, as in the published code).
- The best iterate per sample (highest objective) is returned; ``run`` adds to
  ``AttackResult.extra`` the achieved ``ssim``, ``psnr`` (dB), ``linf/l2_model`` and
  ``linf/l2_raw`` (through ``intensity``) of the returned image and the last table's
  ``q_mean``, ``q_smallest``, ``q_largest`` and ``q_frac_at_max``, all ``(B,)``.
- 2D: 2D images ``(B, C, H, W)`` with a 2D block; on volumes a 2D ``block_size`` is
  VAFA-2D, blocks per slice along ``slice_axis`` (default the last spatial axis, the
  slice axis of MONAI's ``(B, C, H, W, D)``). VAFA-2D has no SSIM term by default (the
  published VAFA-2D has none).

Like the published code, q starts at q_max (measured: from q = 1 the attack returns its
start). By default, unlike it: no per-slice min-max rescale (no NaN on a constant slice),
the search's forward uses hard rounding, SSIM is the global SSIM (11-voxel Gaussian
window), the loss is the foreground Dice loss and any volume size is padded to a
multiple of the block.

``VAFA.published()`` (``preset="published"`` in the registry, the grid and ``medrobust
attack --preset published``) is the reference code (asif-hanif/vafa,
``attacks/vafa/vafa.py``) step for step: the DCT of ``255 x - 128`` (``level_shift``),
AdvDrop's tanh rounding *in the forward pass* with its alpha schedule (``soft_forward``),
each slice min-max rescaled to the valid range before the model (``rescale_slices``),
the block-wise SSIM with a 3-voxel window (``ssim="block"``; VAFA-3D only), the training
DiceCE with background (:func:`dice_ce_with_background`), q_min 5, steps of 1, 20 steps
(VAFA-2D: 10, the reference class's default, which its scripts do not override). The
q updates equal the reference's (``tests/attacks/test_vafa.py`` transcribes it); what
differs: the returned image is the best iterate (``return_best=False``: the last table's
hard-rounded image; the reference returns its last forward's image), a constant slice
stays finite, sizes need not be multiples of the block, and there is no early exit once
every voxel is wrong.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medrobust import metrics
from medrobust.attacks.base import Attack, AttackResult, AttackState, Verdict, WholeVolume
from medrobust.attacks.dct import PAD_MODES, PadMode, block_dct, block_idct
from medrobust.attacks.registry import FREQUENCY_NORM, register_attack
from medrobust.attacks.ssim import SSIMReference
from medrobust.losses import ce
from medrobust.units import Budget, IntensityMap

__all__ = ["VAFA", "PRESETS", "ROUNDINGS", "SSIM_MODES", "dice_ce_with_background", "surrogate_round"]

ROUNDINGS: tuple[str, ...] = ("ste", "cubic", "tanh")
SSIM_MODES: tuple[str, ...] = ("global", "block")
PRESETS: tuple[str, ...] = ("published",)
PUBLISHED_LEVEL_SHIFT = 128.0  # the reference's DCT input is 255 x - 128 (JPEG's level shift)
PUBLISHED_SSIM_WINDOW = 3
_SLICE_FLOOR = 1e-6  # a slice narrower than this fraction of the valid range counts as constant

# The reference's attack loss: MONAI DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True,
# smooth_nr=0.0, smooth_dr=1e-6), background included; the Dice part per sample here.
_DICE_WITH_BACKGROUND = DiceLoss(include_background=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6,
                                 reduction="none")


def dice_ce_with_background(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                            ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The published VAFA/VAFT loss per sample: squared soft Dice over *all* classes + CE.

    The mean over the batch of this is MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True,
    squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)``, the reference's training loss,
    which its attack maximises.

    Args:
        logits: raw scores ``(B, K, *spatial)``.
        y: int class labels ``(B, 1, *spatial)``.
        step: unused, for the common loss signature.
        total_steps: unused, for the common loss signature.
        ignore_mask: optional, nonzero where a voxel is left out.

    Returns:
        ``(B,)``, higher when the model does worse.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits``.

    Example:
        >>> import torch
        >>> from monai.losses import DiceCELoss
        >>> _ = torch.manual_seed(0)
        >>> logits, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
        >>> ref = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
        >>> bool(torch.isclose(dice_ce_with_background(logits, y).mean(), ref(logits, y)))
        True
    """
    cross = ce(logits, y, ignore_mask=ignore_mask)  # checks y and the mask
    probs = logits.softmax(1)
    onehot = F.one_hot(y[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    if ignore_mask is not None:
        keep = (ignore_mask == 0).to(probs.dtype)
        probs, onehot = probs * keep, onehot * keep
    return _DICE_WITH_BACKGROUND(probs, onehot).reshape(logits.shape[0], -1).mean(1) + cross


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


def _number(value: Any, name: str) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_published_options(ssim: str, soft_forward: bool, rounding: str, level_shift: float) -> None:
    """ValueError naming the first of the reference-code options that is out of its range."""
    if ssim not in SSIM_MODES:
        raise ValueError(f"ssim must be one of {', '.join(SSIM_MODES)}, got {ssim!r}")
    if soft_forward and rounding == "ste":
        raise ValueError("soft_forward needs rounding 'cubic' or 'tanh' ('ste' would not quantise at all)")
    if not 0 <= _number(level_shift, "level_shift") <= 255:
        raise ValueError(f"level_shift must lie in [0, 255] (1/255 of the valid range), got {level_shift}")


def _positive_ints(block_size: Sequence[int]) -> tuple[int, ...]:
    try:
        block = tuple(int(b) for b in block_size)
        ok = len(block) in (2, 3) and all(b >= 1 and b == s for b, s in zip(block, block_size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"block_size must be 2 or 3 positive integers, got {block_size!r}")
    return block


class VAFA(Attack):
    """Volumetric adversarial frequency attack; ``VAFA(q_max=20)(model, x, y)``.

    Unlike the voxel attacks it takes no Budget: ``q_max`` is the frequency budget and
    ``valid_range`` the images' range (``get_attack("vafa3d", budget)`` builds one from a
    Budget's valid range and IntensityMap). Calling it runs :meth:`run` and returns
    ``x_adv``.

    Args:
        q_max, q_min: bounds of the table q (1 <= q_min <= q_max), units of (hi - lo)/255;
            defaults 20 and 1.
        steps: signed-gradient steps on q (default 20).
        block_size: 3 sizes (3D blocks) or 2 (2D blocks; per slice on volumes); default
            (32, 32, 32).
        ssim_weight: λ >= 0 of the SSIM term; None (default): 1 with 3D blocks, 0 (no SSIM
            term, as the published VAFA-2D) with 2D blocks.
        ssim: "global" (default: one SSIM over the image, 11-voxel Gaussian window) or
            "block" (the published block-wise SSIM: per block, 3-voxel window, clamped at 0).
        step_size: q units per step; None: ``2 (q_max - q_min) / steps``.
        rounding: "ste" (default), "cubic" or "tanh" (surrogate derivative; forward is hard).
        soft_forward: the search's forward uses the surrogate's value, not hard rounding
            (the published code; needs "cubic" or "tanh"); the returned last image is hard.
        level_shift: subtracted before the DCT and added back after it, in 1/255 of the
            valid range (default 0; the published code's 128 moves the DC coefficient's
            rounding grid).
        rescale_slices: min-max rescale every slice (the axes but ``slice_axis``) of the
            quantised image to the valid range before the model (the published code; a
            constant slice becomes ``lo`` instead of NaN).
        q_init: start value of q in [q_min, q_max]; None (default) starts at q_max. Measured
            on a trained 3D UNet: from q = 1 every coefficient/Q is >> 1, the rounding error
            (the only gradient signal w.r.t. q) is noise and the search never leaves its
            start (Dice 0.994 vs clean 0.994); from q_max it attacks (see design.md 5).
        valid_range: (lo, hi) of the images in model units; x must lie inside it.
        loss: per-sample loss name (default "dice") or callable (see medrobust.losses).
        intensity: IntensityMap of the data, for the norms in raw units (e.g. HU).
        slice_axis: spatial axis (0, 1, 2 or negative) along which VAFA-2D slices a volume.
        pad: "replicate" or "zero" padding of volumes not a multiple of the block.
        targeted, early_stop, return_best: as :class:`medrobust.attacks.base.Attack`.

    Raises:
        ValueError: any option out of its range (the message names it); from :meth:`run`:
            a block larger than x, or x outside ``valid_range``.

    Shape:
        - x: ``(B, C, H, W)`` (2D block) or ``(B, C, D, H, W)``, model units in ``valid_range``.
        - y: ``(B, 1, *spatial)`` int labels (or ``(B,)`` for a classifier with a "ce" loss).
        - output: as ``x``; the table q: ``(B, C, *lead, *n_blocks, *block)`` (see
          :func:`~medrobust.attacks.dct.block_dct`).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Conv3d(1, 3, 3, padding=1)           # a tiny segmenter
        >>> x = torch.rand(1, 1, 8, 8, 8)                          # in [0, 1]
        >>> y = torch.randint(0, 3, (1, 1, 8, 8, 8))
        >>> attack = VAFA(q_max=20, steps=3, block_size=(4, 4, 4))
        >>> result = attack.run(model, x, y)
        >>> result.x_adv.shape, result.loss_history.shape
        (torch.Size([1, 1, 8, 8, 8]), torch.Size([4, 1]))
        >>> bool(((result.x_adv >= 0) & (result.x_adv <= 1)).all())
        True
        >>> round(float(result.extra["ssim"]), 3), float(result.extra["q_largest"])
        (0.999, 20.0)
    """

    name = "vafa"
    uses_step_size = False

    def __init__(self, q_max: float = 20.0, steps: int = 20, block_size: Sequence[int] = (32, 32, 32),
                 ssim_weight: float | None = None, step_size: float | None = None, rounding: str = "ste",
                 q_init: float | None = None, q_min: float = 1.0, valid_range: tuple[float, float] = (0.0, 1.0),
                 loss: str | Callable[..., torch.Tensor] = "dice", intensity: IntensityMap | None = None,
                 slice_axis: int = -1, pad: PadMode = "replicate", targeted: bool = False,
                 early_stop: bool | float = False, return_best: bool = True, ssim: str = "global",
                 soft_forward: bool = False, level_shift: float = 0.0, rescale_slices: bool = False) -> None:
        block = _positive_ints(block_size)
        ssim_weight = (1.0 if len(block) == 3 else 0.0) if ssim_weight is None else ssim_weight
        q_max, q_min = _number(q_max, "q_max"), _number(q_min, "q_min")
        q_init = q_max if q_init is None else _number(q_init, "q_init")
        if q_max < 1:
            raise ValueError(f"q_max must be >= 1 (q = 1 is 8-bit precision), got {q_max}")
        if not 1 <= q_min <= q_max:
            raise ValueError(f"q_min must satisfy 1 <= q_min <= q_max = {q_max}, got {q_min}")
        if not q_min <= q_init <= q_max:
            raise ValueError(f"q_init must lie in [q_min, q_max] = [{q_min}, {q_max}], got {q_init}")
        if _number(ssim_weight, "ssim_weight") < 0:
            raise ValueError(f"ssim_weight must be >= 0, got {ssim_weight}")
        if step_size is not None and _number(step_size, "step_size") < 0:
            raise ValueError(f"step_size must be >= 0 (q units), got {step_size}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
        if isinstance(slice_axis, bool) or not isinstance(slice_axis, int) or not -3 <= slice_axis <= 2:
            raise ValueError(f"slice_axis must be a spatial axis in -3..2, got {slice_axis!r}")
        _check_published_options(ssim, soft_forward, rounding, level_shift)
        try:
            lo, hi = (_number(v, "valid_range") for v in valid_range)
        except (TypeError, ValueError):
            raise ValueError(f"valid_range must be two finite numbers (lo, hi), got {valid_range!r}") from None
        if not lo < hi:
            raise ValueError(f"valid_range must be (lo, hi) with lo < hi, got {valid_range!r}")
        budget = Budget.linf(hi - lo, unit="model", valid_range=(lo, hi), intensity=intensity)
        super().__init__(budget, steps=steps, loss=loss, targeted=targeted, early_stop=early_stop,
                         return_best=return_best)
        self.block_size = block
        self.q_max, self.q_min, self.q_init = q_max, q_min, q_init
        self.ssim_weight, self.ssim = float(ssim_weight), ssim
        self.q_step = float(step_size) if step_size is not None else 2 * (q_max - q_min) / steps
        self.rounding, self.pad, self.slice_axis = rounding, pad, slice_axis
        self.soft_forward, self.level_shift, self.rescale_slices = bool(soft_forward), float(level_shift), bool(
            rescale_slices)
        self.valid_range, self.intensity = (lo, hi), intensity
        self._final: dict[str, torch.Tensor] = {}

    @classmethod
    def published(cls, q_max: float = 20.0, steps: int | None = None, block_size: Sequence[int] = (32, 32, 32),
                  **options: Any) -> VAFA:
        """The reference code's attack (asif-hanif/vafa), step for step (see the module docstring).

        Level shift 128, tanh rounding in the forward pass (alpha 0.1 towards 0), every slice
        min-max rescaled, q from q_max in steps of 1 down to q_min = 5 (or q_max if lower),
        the training DiceCE with background, and with 3D blocks the block-wise SSIM
        (3-voxel window, weight 1); 2D blocks: no SSIM term.

        Args:
            q_max: as :class:`VAFA` (default 20, the README's).
            steps: None: the reference class's default, 20 with 3D blocks, 10 with 2D blocks.
            block_size: as :class:`VAFA` (default 32³, the README's).
            **options: any other :class:`VAFA` option; overrides the published setting.

        Returns:
            A configured VAFA.

        Example:
            >>> VAFA.published(q_max=10, steps=2, block_size=(4, 4, 4))  # doctest: +NORMALIZE_WHITESPACE
            VAFA(q_max=10.0, q_min=5.0, q_init=10.0, steps=2, block_size=(4, 4, 4), ssim_weight=1.0, ssim='block',
                 step_size=1.0, rounding='tanh', soft_forward=True, level_shift=128.0, rescale_slices=True,
                 valid_range=(0.0, 1.0), loss='dice_ce_with_background')
            >>> VAFA.published(block_size=(32, 32)).steps, VAFA.published(block_size=(32, 32)).ssim_weight
            (10, 0.0)
        """
        three_d = len(_positive_ints(block_size)) == 3
        settings = {"rounding": "tanh", "soft_forward": True, "q_min": min(5.0, float(q_max)),
                    "q_init": float(q_max), "step_size": 1.0, "ssim": "block", "ssim_weight": 1.0 if three_d else 0.0,
                    "level_shift": PUBLISHED_LEVEL_SHIFT, "rescale_slices": True, "loss": dice_ce_with_background,
                    **options}
        return cls(q_max=q_max, steps=(20 if three_d else 10) if steps is None else steps, block_size=block_size,
                   **settings)

    @classmethod
    def from_preset(cls, preset: str | None, **options: Any) -> VAFA:
        """``VAFA(**options)``, or the preset's attack with ``options`` on top.

        Args:
            preset: None, or one of :data:`PRESETS` ("published": :meth:`published`).
            **options: :class:`VAFA` options.

        Returns:
            A configured VAFA.

        Raises:
            ValueError: an unknown preset (the message lists them) or a bad option.

        Example:
            >>> VAFA.from_preset("published", block_size=(8, 8, 8)).rounding
            'tanh'
            >>> VAFA.from_preset("paper")
            Traceback (most recent call last):
            ...
            ValueError: preset must be one of published, got 'paper'
        """
        if preset is None:
            return cls(**options)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        return cls.published(**options)

    def __repr__(self) -> str:
        return (f"VAFA(q_max={self.q_max}, q_min={self.q_min}, q_init={self.q_init}, steps={self.steps}, "
                f"block_size={self.block_size}, ssim_weight={self.ssim_weight}, ssim={self.ssim!r}, "
                f"step_size={self.q_step}, rounding={self.rounding!r}, soft_forward={self.soft_forward}, "
                f"level_shift={self.level_shift}, rescale_slices={self.rescale_slices}, "
                f"valid_range={self.valid_range}, loss={self.loss_name!r})")

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

    # -- entry point ----------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            mask: torch.Tensor | None = None) -> AttackResult:
        """As :meth:`Attack.run`; ``extra`` holds the image and table statistics.

        Args:
            model: maps images to logits.
            x: clean images, model units inside ``valid_range``.
            y: labels (targets when ``targeted``).
            mask: limits the change to its nonzero voxels; None: everywhere.

        Returns:
            An :class:`~medrobust.attacks.base.AttackResult` whose ``extra`` holds, each
            ``(B,)``: ``ssim``, ``psnr`` (dB), ``linf_model``, ``l2_model``, ``linf_raw``,
            ``l2_raw`` (through ``intensity``) of the returned image, and the last table's
            ``q_mean``, ``q_smallest``, ``q_largest``, ``q_frac_at_max``.

        Raises:
            ValueError: x outside ``valid_range``, a block that does not fit x, or bad
                ``x``/``y``/``mask``.

        Shape:
            - x: ``(B, C, *spatial)``; y: ``(B, 1, *spatial)`` or ``(B,)``;
              result.x_adv: as ``x``; result.loss_history: ``(T + 1, B)``.

        Example:
            >>> import torch
            >>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
            >>> x = torch.rand(2, 1, 8, 8)
            >>> y = torch.randint(0, 2, (2, 1, 8, 8))
            >>> result = VAFA(q_max=10, steps=2, block_size=(4, 4)).run(model, x, y)
            >>> sorted(result.extra)
            ['l2_model', 'l2_raw', 'linf_model', 'linf_raw', 'psnr', 'q_frac_at_max', 'q_largest', 'q_mean', 'q_smallest', 'ssim']
            >>> VAFA(block_size=(4, 4)).run(model, x * 2, y)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: x lies outside valid_range (0.0, 1.0) (min ..., max ...); give the data's range in model units
        """
        if isinstance(x, torch.Tensor) and x.ndim in (4, 5):
            self.blocks_for(x)
            lo, hi = self.valid_range
            tol = 1e-6 * (hi - lo)
            if bool((x.amin() < lo - tol) | (x.amax() > hi + tol)):
                raise ValueError(f"x lies outside valid_range {self.valid_range} (min {float(x.amin()):.4g}, "
                                 f"max {float(x.amax()):.4g}); give the data's range in model units")
        self._final = {}
        result = super().run(model, x, y, mask)
        q = self._final.pop("q")
        with torch.no_grad():
            xd, adv = x.detach(), result.x_adv
            width = self.valid_range[1] - self.valid_range[0]
            flat_q = q.reshape(q.shape[0], -1)
            result.extra.update({
                "ssim": SSIMReference(xd, width)(adv),
                "psnr": metrics.psnr(xd, adv, width).to(xd.device),
                **{k: v.to(device=xd.device, dtype=xd.dtype)
                   for k, v in metrics.perturbation_norms(xd, adv, self.intensity).items()},
                "q_mean": flat_q.mean(1), "q_smallest": flat_q.amin(1), "q_largest": flat_q.amax(1),
                "q_frac_at_max": (flat_q >= self.q_max - 1e-6).to(xd.dtype).mean(1),
            })
        return result


def _factory(dims: int, default_block: tuple[int, ...]) -> Callable[..., VAFA]:
    def make(budget: Budget, **options: Any) -> VAFA:
        """VAFA from a Budget: its valid range and IntensityMap are used, its eps is not.

        q_max is the frequency budget; ``preset="published"`` is :meth:`VAFA.published`.
        """
        block = tuple(options.pop("block_size", default_block))
        if len(block) != dims:
            raise ValueError(f"block_size: vafa{dims}d needs {dims} block sizes, got {block}")
        if options.pop("restarts", 1) != 1:
            raise ValueError("restarts: VAFA is deterministic (q starts at q_init); use restarts=1")
        if "valid_range" not in options:
            lo, hi = budget.low.reshape(-1), budget.high.reshape(-1)
            if lo.numel() != 1 or hi.numel() != 1 or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
                raise ValueError("valid_range: VAFA needs one finite valid range; give the budget one or pass valid_range")
            options["valid_range"] = (float(lo), float(hi))
        options.setdefault("intensity", budget.intensity)
        return VAFA.from_preset(options.pop("preset", None), block_size=block, **options)
    return make


register_attack("vafa3d", norms=(FREQUENCY_NORM,))(_factory(3, (32, 32, 32)))
register_attack("vafa2d", norms=(FREQUENCY_NORM,))(_factory(2, (32, 32)))
