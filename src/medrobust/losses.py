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
2020; pixel-wise for segmentation) and ``margin`` (largest other logit minus the true one).
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["LOSS_NAMES", "STEP_DEPENDENT", "LossFn", "get_loss", "check_labels", "ce", "dice",
           "dice_ce", "segpgd", "cospgd", "dlr", "margin"]


class LossFn(Protocol):
    def __call__(self, logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                 ignore_mask: torch.Tensor | None = None) -> torch.Tensor: ...


def check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``y`` fits ``logits`` for exactly one task (see module doc)."""
    if logits.ndim < 2:
        raise ValueError(f"logits must be (B, K) or (B, K, *spatial), got shape {tuple(logits.shape)}")
    if logits.ndim == 2:
        if y.shape != (logits.shape[0],):
            raise ValueError(f"y: classification logits {tuple(logits.shape)} need labels of shape "
                             f"({logits.shape[0]},), got {tuple(y.shape)}")
    elif y.shape != (logits.shape[0], 1, *logits.shape[2:]):
        raise ValueError(f"y: segmentation logits {tuple(logits.shape)} need labels of shape "
                         f"{(logits.shape[0], 1, *logits.shape[2:])}, got {tuple(y.shape)}")


def _keep(logits: torch.Tensor, ignore_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Weights (B, *spatial) that are 1 where a voxel counts, or None for all voxels."""
    if ignore_mask is None:
        return None
    want = (logits.shape[0],) if logits.ndim == 2 else (logits.shape[0], 1, *logits.shape[2:])
    if ignore_mask.shape != want:
        raise ValueError(f"ignore_mask must have shape {want} for logits {tuple(logits.shape)}, "
                         f"got {tuple(ignore_mask.shape)}")
    keep = (ignore_mask == 0).to(logits.dtype)
    return keep if logits.ndim == 2 else keep[:, 0]


def _reduce(per_voxel: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over the non-batch axes of ``per_voxel`` (B,) or (B, *spatial), ignoring voxels."""
    if per_voxel.ndim == 1:
        return per_voxel if keep is None else per_voxel * keep
    flat = per_voxel.reshape(per_voxel.shape[0], -1)
    if keep is None:  # sum / n, not mean: its backward is a view, not a volume-sized division
        return flat.sum(1) / flat.shape[1]
    k = keep.reshape(keep.shape[0], -1)
    return (flat * k).sum(1) / k.sum(1).clamp_min(1.0)


def _target(y: torch.Tensor) -> torch.Tensor:
    """Class indices (B,) or (B, *spatial) from the label tensor."""
    return y if y.ndim == 1 else y[:, 0]


def _ce_map(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, _target(y).long(), reduction="none")


def ce(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
       ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, mean over voxels per sample: ``(B,)``."""
    check_labels(logits, y)
    return _reduce(_ce_map(logits, y), _keep(logits, ignore_mask))


_DICE = DiceLoss(include_background=False, to_onehot_y=False, softmax=False, reduction="none")


def dice(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
         ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft Dice of softmax(logits), mean over the foreground classes: ``(B,)`` in [0, 1].

    MONAI's DiceLoss does the reduction; the softmax and one-hot are taken here so that
    ignored voxels can be zeroed in both (MONAI's MaskedDiceLoss masks the logits before
    its softmax, which does not remove them). Classification logits count as one voxel.
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
    """Dice + CE per sample (MONAI DiceCELoss's default weights; its reduction="none" is
    unsupported, hence the sum of the two per-sample terms here)."""
    return dice(logits, y, ignore_mask=ignore_mask) + ce(logits, y, ignore_mask=ignore_mask)


def segpgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SegPGD: CE with weight ``1 - λ_t`` on correctly and ``λ_t`` on wrongly classified
    voxels, ``λ_t = (t - 1) / (2T)`` (Gu et al. 2022, eq. 6): ``(B,)``."""
    check_labels(logits, y)
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"segpgd needs 1 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    lam = (step - 1) / (2 * total_steps)
    correct = (logits.detach().argmax(1) == _target(y)).to(logits.dtype)
    weight = (1 - lam) * correct + lam * (1 - correct)
    return _reduce(weight * _ce_map(logits, y), _keep(logits, ignore_mask))


def cospgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """CosPGD: per-voxel CE times the stop-gradient cosine similarity of softmax(logits)
    and one-hot(y) (Agnihotri et al. 2024): ``(B,)``."""
    check_labels(logits, y)
    with torch.no_grad():
        onehot = F.one_hot(_target(y).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1)
    return _reduce(cos * _ce_map(logits, y), _keep(logits, ignore_mask))


def _true_and_other(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit of the label class and the largest other logit, each (B,) or (B, *spatial)."""
    idx = _target(y).long().unsqueeze(1)
    z_true = logits.gather(1, idx)
    z_other = logits.scatter(1, idx, float("-inf")).amax(1)
    return z_true[:, 0], z_other


def margin(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Largest other logit minus the label's logit (> 0: misclassified), voxel mean: ``(B,)``."""
    check_labels(logits, y)
    z_true, z_other = _true_and_other(logits, y)
    return _reduce(z_other - z_true, _keep(logits, ignore_mask))


def dlr(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
        ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3 + 1e-12)``
    (Croce & Hein 2020), per voxel for segmentation, mean per sample: ``(B,)``.

    Needs K >= 3 logits (z_π3 is the third largest); with K = 2 it falls back to
    :func:`margin`, the unnormalised numerator, since there is no third logit to scale by.
    """
    check_labels(logits, y)
    if logits.shape[1] < 3:
        return margin(logits, y, ignore_mask=ignore_mask)
    z_true, z_other = _true_and_other(logits, y)
    top = logits.topk(3, dim=1).values
    ratio = -(z_true - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
    return _reduce(ratio, _keep(logits, ignore_mask))


_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": ce, "dice": dice, "dice_ce": dice_ce, "segpgd": segpgd, "cospgd": cospgd, "dlr": dlr, "margin": margin,
}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)
STEP_DEPENDENT: frozenset[str] = frozenset({"segpgd"})


def get_loss(name: str) -> LossFn:
    """The per-sample loss called ``name`` (one of ``LOSS_NAMES``)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSS_NAMES)}")
    return _LOSSES[name]  # type: ignore[return-value]
