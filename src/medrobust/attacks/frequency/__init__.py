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

from medrobust.attacks.frequency.published import dice_ce_with_background
from medrobust.attacks.frequency.rounding import ROUNDINGS, surrogate_round
from medrobust.attacks.frequency.vafa import PRESETS, SSIM_MODES, VAFA  # registers vafa2d and vafa3d

__all__ = ["VAFA", "PRESETS", "ROUNDINGS", "SSIM_MODES", "dice_ce_with_background", "surrogate_round"]
