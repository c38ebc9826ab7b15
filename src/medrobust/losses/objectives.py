"""The plain per-sample objectives: cross-entropy, soft Dice, Dice + CE and the cosine distance (PAdam-Cos)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from medrobust.losses.base import _ce_map, _keep, _reduce, _target, check_labels


def ce(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
       ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, mean over voxels per sample: ``(B,)``.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        Cross-entropy per sample, float ``(B,)``; an ignored sample or a sample with every
        voxel ignored gives 0.

    Example:
        >>> import torch
        >>> from medrobust.losses import ce
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in ce(logits, y).tolist()]
        [1.6125, 1.8897]
        >>> ignore = torch.zeros(2, 1, 4, 4)
        >>> ignore[:, :, :2] = 1                      # leave out the top two rows
        >>> bool(torch.allclose(ce(logits, y, ignore_mask=ignore), ce(logits[:, :, 2:], y[:, :, 2:])))
        True
        >>> [round(v, 4) for v in ce(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])).tolist()]
        [0.1698]
    """
    check_labels(logits, y)
    return _reduce(_ce_map(logits, y), _keep(logits, ignore_mask))


_DICE = DiceLoss(include_background=False, to_onehot_y=False, softmax=False, reduction="none")


def dice(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
         ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft Dice of softmax(logits), mean over the foreground classes: ``(B,)`` in [0, 1].

    MONAI's DiceLoss does the reduction; the softmax and one-hot are taken here so that
    ignored voxels can be zeroed in both (MONAI's MaskedDiceLoss masks the logits before
    its softmax, which does not remove them). Classification logits count as one voxel.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        1 - soft Dice per sample, float ``(B,)`` in [0, 1].

    Example:
        >>> import torch
        >>> from medrobust.losses import dice
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in dice(logits, y).tolist()]
        [0.7253, 0.769]
        >>> perfect = 100.0 * torch.nn.functional.one_hot(y[:, 0], 3).movedim(-1, 1).float()
        >>> [round(v, 4) for v in dice(perfect, y).tolist()]
        [0.0, 0.0]
    """
    check_labels(logits, y)
    keep = _keep(logits, ignore_mask)
    if logits.ndim == 2:
        logits, y = logits[:, :, None], y[:, None, None]
        keep = keep[:, None] if keep is not None else None
    probs = logits.softmax(1)
    onehot = F.one_hot(y[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    if keep is not None:
        probs, onehot = probs * keep[:, None], onehot * keep[:, None]
    return _DICE(probs, onehot).reshape(logits.shape[0], -1).mean(1)


def dice_ce(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
            ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Dice + CE per sample: ``dice(logits, y) + ce(logits, y)``, ``(B,)``.

    MONAI DiceCELoss's default weights (1 and 1); its reduction="none" is unsupported,
    hence the sum of the two per-sample terms here.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        ``dice(logits, y) + ce(logits, y)`` per sample, float ``(B,)``.

    Example:
        >>> import torch
        >>> from medrobust.losses import dice_ce
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in dice_ce(logits, y).tolist()]
        [2.3378, 2.6587]
    """
    return dice(logits, y, ignore_mask=ignore_mask) + ce(logits, y, ignore_mask=ignore_mask)


def cosine_distance(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PAdam-Cos loss: ``1 - cos(logits, one_hot(y))`` per voxel, mean per sample: ``(B,)``.

    As published (Halmosi et al. 2024): the cosine is taken between the raw logits (not the
    softmax) and the one-hot label along the class axis, with gradient through both norms.

    Arguments, errors and shapes as for :class:`~medrobust.losses.LossFn`; ``step`` and
    ``total_steps`` are unused.

    Returns:
        The mean cosine distance per sample, in [0, 2]; 0 for an ignored sample.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
        >>> cosine_distance(logits, torch.tensor([1, 1]))     # cos = 4/5 and 1
        tensor([0.2000, 0.0000])
    """
    check_labels(logits, y)
    onehot = F.one_hot(_target(y).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return _reduce(1 - F.cosine_similarity(logits, onehot, dim=1), _keep(logits, ignore_mask))
