"""VAFA itself: its options and their checks, the published preset, ``run``'s statistics, registration.

The package docstring (:mod:`medrobust.attacks.frequency`) describes the attack; the loop's
hooks are :class:`~medrobust.attacks.frequency.table.TableHooks`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from medrobust import metrics
from medrobust.attacks.base import AttackResult
from medrobust.attacks.dct import PAD_MODES, PadMode
from medrobust.attacks.frequency.published import PUBLISHED_LEVEL_SHIFT, dice_ce_with_background
from medrobust.attacks.frequency.rounding import ROUNDINGS
from medrobust.attacks.frequency.table import TableHooks
from medrobust.attacks.registry import FREQUENCY_NORM, register_attack
from medrobust.attacks.ssim import SSIMReference
from medrobust.units import Budget, IntensityMap

__all__ = ["VAFA", "PRESETS", "SSIM_MODES"]

SSIM_MODES: tuple[str, ...] = ("global", "block")
PRESETS: tuple[str, ...] = ("published",)


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


class VAFA(TableHooks):
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
