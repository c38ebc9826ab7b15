"""The reference VAFA code's settings: its attack loss (DiceCE with background) and constants.

:meth:`VAFA.published <medrobust.attacks.frequency.VAFA.published>` uses them to run the
reference code (asif-hanif/vafa) step for step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from medrobust.losses import ce

__all__ = ["PUBLISHED_LEVEL_SHIFT", "PUBLISHED_SSIM_WINDOW", "dice_ce_with_background"]

PUBLISHED_LEVEL_SHIFT = 128.0  # the reference's DCT input is 255 x - 128 (JPEG's level shift)
PUBLISHED_SSIM_WINDOW = 3

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
