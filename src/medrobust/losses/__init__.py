"""Attack and training objectives, one value per sample (design.md section 5).

Every loss has the signature ``fn(logits, y, *, step=1, total_steps=1, ignore_mask=None)
-> (B,)`` and is **higher when the model does worse**, so an untargeted attack maximises
it and a targeted one (``y`` = the target) minimises it.

- ``logits``: ``(B, K)`` (classification, ``y`` int64 ``(B,)``) or ``(B, K, *spatial)``
  (segmentation, ``y`` int64 ``(B, 1, *spatial)``).
- ``ignore_mask``: nonzero where a voxel is left out of the loss, ``(B, 1, *spatial)``
  (or ``(B,)`` for classification: an ignored sample's loss is 0). Voxel losses are the
  mean over the voxels that are not ignored.
- ``step`` / ``total_steps``: the attack iteration t (1-based) and T; only SegPGD uses
  them (``STEP_DEPENDENT``), so iterates of other losses are comparable across steps.

Names: ``ce``, ``dice`` (1 - soft Dice over the foreground classes), ``dice_ce``,
``segpgd`` (Gu et al. 2022), ``cospgd`` (Agnihotri et al. 2024), ``dlr`` (Croce & Hein
2020; pixel-wise for segmentation), ``margin`` (largest other logit minus the true one) and
``cosine`` (1 - cosine of the raw logits and the one-hot label, PAdam-Cos's loss).

Modules: ``base`` (``LossFn``, ``check_labels``), ``objectives`` (ce, dice, dice_ce,
cosine), ``weighted`` (SegPGD and CosPGD, untargeted and targeted), ``margin`` (margin,
DLR) and ``registry`` (``get_loss``); this package re-exports their public names.
"""
from __future__ import annotations

from medrobust.losses.base import LossFn, check_labels
from medrobust.losses.margin import dlr, margin
from medrobust.losses.objectives import ce, cosine_distance, dice, dice_ce
from medrobust.losses.registry import LOSS_NAMES, STEP_DEPENDENT, get_loss
from medrobust.losses.weighted import cospgd, cospgd_targeted, segpgd, segpgd_targeted

__all__ = ["LOSS_NAMES", "STEP_DEPENDENT", "LossFn", "get_loss", "check_labels", "ce", "dice",
           "dice_ce", "segpgd", "cospgd", "dlr", "margin", "segpgd_targeted", "cospgd_targeted", "cosine_distance"]
