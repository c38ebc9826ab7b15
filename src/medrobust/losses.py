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
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from medrobust.registry import Registry

__all__ = ["LOSS_NAMES", "STEP_DEPENDENT", "LossFn", "get_loss", "check_labels", "ce", "dice",
           "dice_ce", "segpgd", "cospgd", "dlr", "margin", "segpgd_targeted", "cospgd_targeted", "cosine_distance"]


class LossFn(Protocol):
    """What every loss is: ``fn(logits, y, *, step=1, total_steps=1, ignore_mask=None) -> (B,)``.

    Higher means the model does worse on the sample (see the module docstring). Any
    callable with this signature can be used where a ``LossFn`` is expected.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import LossFn, get_loss
        >>> loss: LossFn = get_loss("ce")
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3])).shape
        torch.Size([2])
    """

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                 ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The per-sample loss ``(B,)`` of ``logits`` against labels ``y``."""
        ...


def check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``y`` fits ``logits`` for exactly one task (see module doc).

    Classification logits ``(B, K)`` need labels ``(B,)``; segmentation logits
    ``(B, K, *spatial)`` need labels ``(B, 1, *spatial)``. Label values are not checked.

    Args:
        logits: ``(B, K)`` or ``(B, K, *spatial)``.
        y: the labels to check.

    Returns:
        None.

    Raises:
        ValueError: ``logits`` has fewer than 2 dimensions, or ``y``'s shape does not fit.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)`` respectively

    Example:
        >>> import torch
        >>> from medrobust.losses import check_labels
        >>> check_labels(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long))
        >>> check_labels(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
        Traceback (most recent call last):
            ...
        ValueError: y: segmentation logits (2, 3, 4, 4) need labels of shape (2, 1, 4, 4), got (2, 4, 4)
    """
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
    """Cross-entropy, mean over voxels per sample: ``(B,)``.

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        Cross-entropy per sample, float ``(B,)``; an ignored sample or a sample with every
        voxel ignored gives 0.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

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

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        1 - soft Dice per sample, float ``(B,)`` in [0, 1].

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

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

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        ``dice(logits, y) + ce(logits, y)`` per sample, float ``(B,)``.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

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


def segpgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SegPGD: cross-entropy weighted by correctness with a step-dependent ``λ_t``: ``(B,)``.

    Weight ``1 - λ_t`` on correctly and ``λ_t`` on wrongly classified voxels,
    ``λ_t = (t - 1) / (2T)`` (Gu et al. 2022, eq. 6).

    Early steps push the voxels still classified correctly; later steps weigh the wrong
    ones more (the only loss in ``STEP_DEPENDENT``).

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based) (1 <= step <= total_steps).
        total_steps: the number of iterations T (1 <= step <= total_steps).
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        Weighted cross-entropy per sample, float ``(B,)``.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`);
            ``step`` or ``total_steps`` out of range.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import segpgd
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in segpgd(logits, y, step=1, total_steps=5).tolist()]
        [0.156, 0.1431]
        >>> [round(v, 4) for v in segpgd(logits, y, step=5, total_steps=5).tolist()]
        [0.6762, 0.7845]
    """
    check_labels(logits, y)
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"segpgd needs 1 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    lam = (step - 1) / (2 * total_steps)
    correct = (logits.detach().argmax(1) == _target(y)).to(logits.dtype)
    weight = (1 - lam) * correct + lam * (1 - correct)
    return _reduce(weight * _ce_map(logits, y), _keep(logits, ignore_mask))


def cospgd(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """CosPGD: cross-entropy weighted by the similarity of prediction and label: ``(B,)``.

    Per-voxel CE times the stop-gradient cosine similarity of softmax(logits) and
    one-hot(y) (Agnihotri et al. 2024).

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        Cosine-weighted cross-entropy per sample, float ``(B,)``.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import cospgd
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4)        # (B, K, H, W)
        >>> y = torch.randint(0, 3, (2, 1, 4, 4))   # (B, 1, H, W)
        >>> [round(v, 4) for v in cospgd(logits, y).tolist()]
        [0.4622, 0.4029]
    """
    check_labels(logits, y)
    with torch.no_grad():
        onehot = F.one_hot(_target(y).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1)
    return _reduce(cos * _ce_map(logits, y), _keep(logits, ignore_mask))


def segpgd_targeted(logits: torch.Tensor, target: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted SegPGD: cross-entropy to the target, weighted by whether a voxel reached it: ``(B,)``.

    The targeted mirror of :func:`segpgd`: weight ``λ_t`` on voxels already at the target
    and ``1 - λ_t`` on the others, ``λ_t = (t - 1) / (2T)``, so the first steps push the
    voxels that have not reached the target yet. A targeted attack *minimises* it.
    (Negating the untargeted weights instead gives the voxels not at the target no
    gradient at t = 1.)

    Args:
        logits: raw scores, ``(B, K)`` or ``(B, K, *spatial)``.
        target: int target classes ``(B,)`` or ``(B, 1, *spatial)``.
        step: the attack iteration t (1-based).
        total_steps: the number of iterations T.
        ignore_mask: optional, nonzero where a voxel is left out.

    Returns:
        Weighted cross-entropy to the target per sample, float ``(B,)``.

    Raises:
        ValueError: as :func:`segpgd`.

    Shape:
        - logits: ``(B, K, *spatial)``; target: ``(B, 1, *spatial)``; output: ``(B,)``

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[3.0, -3.0]], [[-3.0, 3.0]]]])   # voxel 0 -> class 0, voxel 1 -> class 1
        >>> target = torch.tensor([[[[1, 1]]]])                        # voxel 1 is already at the target
        >>> ce = torch.nn.functional.cross_entropy(logits, target[:, 0], reduction="none")
        >>> bool(torch.isclose(segpgd_targeted(logits, target, step=1, total_steps=4), ce[..., 0].mean() / 2))
        True
    """
    check_labels(logits, target)
    if total_steps < 1 or not 1 <= step <= total_steps:
        raise ValueError(f"segpgd needs 1 <= step <= total_steps, got step={step}, total_steps={total_steps}")
    lam = (step - 1) / (2 * total_steps)
    reached = (logits.detach().argmax(1) == _target(target)).to(logits.dtype)
    weight = lam * reached + (1 - lam) * (1 - reached)
    return _reduce(weight * _ce_map(logits, target), _keep(logits, ignore_mask))


def cospgd_targeted(logits: torch.Tensor, target: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted CosPGD: cross-entropy to the target weighted by ``1 - cos``: ``(B,)``.

    As the published CosPGD code's targeted branch: voxels whose softmax is still far from
    the target's one-hot weigh the most. A targeted attack *minimises* it.

    Args:
        logits: raw scores, ``(B, K)`` or ``(B, K, *spatial)``.
        target: int target classes ``(B,)`` or ``(B, 1, *spatial)``.
        step: unused (common signature).
        total_steps: unused.
        ignore_mask: optional, nonzero where a voxel is left out.

    Returns:
        Weighted cross-entropy to the target per sample, float ``(B,)``.

    Raises:
        ValueError: ``target`` or ``ignore_mask`` does not fit ``logits``.

    Shape:
        - logits: ``(B, K, *spatial)``; target: ``(B, 1, *spatial)``; output: ``(B,)``

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> round(float(cospgd_targeted(logits, target)), 2)        # voxel 1 at the target adds ~0
        9.0
    """
    check_labels(logits, target)
    with torch.no_grad():
        onehot = F.one_hot(_target(target).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1)
    return _reduce((1 - cos) * _ce_map(logits, target), _keep(logits, ignore_mask))


def cosine_distance(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
                    ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PAdam-Cos loss: ``1 - cos(logits, one_hot(y))`` per voxel, mean per sample: ``(B,)``.

    As published (Halmosi et al. 2024): the cosine is taken between the raw logits (not the
    softmax) and the one-hot label along the class axis, with gradient through both norms.

    Args:
        logits: raw scores, ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target when targeted).
        step: the attack iteration t; unused, for the common loss signature.
        total_steps: the number of iterations T; unused, for the common loss signature.
        ignore_mask: nonzero where a voxel (classification: a sample) is left out.

    Returns:
        The mean cosine distance per sample, in [0, 2]; 0 for an ignored sample.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits``.

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
        >>> cosine_distance(logits, torch.tensor([1, 1]))     # cos = 4/5 and 1
        tensor([0.2000, 0.0000])
    """
    check_labels(logits, y)
    onehot = F.one_hot(_target(y).long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return _reduce(1 - F.cosine_similarity(logits, onehot, dim=1), _keep(logits, ignore_mask))


def _true_and_other(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit of the label class and the largest other logit, each (B,) or (B, *spatial)."""
    idx = _target(y).long().unsqueeze(1)
    z_true = logits.gather(1, idx)
    z_other = logits.scatter(1, idx, float("-inf")).amax(1)
    return z_true[:, 0], z_other


def margin(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
           ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Largest other logit minus the label's logit (> 0: misclassified), voxel mean: ``(B,)``.

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        The margin per sample, float ``(B,)``, in logit units.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import margin
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
        >>> margin(logits, torch.tensor([0, 1])).tolist()   # right by 2, wrong by 2
        [-2.0, 2.0]
    """
    check_labels(logits, y)
    z_true, z_other = _true_and_other(logits, y)
    return _reduce(z_other - z_true, _keep(logits, ignore_mask))


def dlr(logits: torch.Tensor, y: torch.Tensor, *, step: int = 1, total_steps: int = 1,
        ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), mean per sample: ``(B,)``.

    ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3 + 1e-12)``, per voxel for segmentation.

    Needs K >= 3 logits (z_π3 is the third largest); with K = 2 it falls back to
    :func:`margin`, the unnormalised numerator, since there is no third logit to scale by.

    Args:
        logits: raw scores (before softmax), ``(B, K)`` or ``(B, K, *spatial)``.
        y: int class labels ``(B,)`` or ``(B, 1, *spatial)`` (the target class when attacking
            targeted).
        step: the attack iteration t (1-based); unused, for the common signature.
        total_steps: the number of iterations T; unused, for the common signature.
        ignore_mask: optional, nonzero where a voxel (classification: a sample) is left out.

    Returns:
        The DLR loss per sample, float ``(B,)``; invariant to shifting and scaling the
        logits.

    Raises:
        ValueError: ``y`` or ``ignore_mask`` does not fit ``logits`` (see :func:`check_labels`).

    Shape:
        - logits: ``(B, K)`` or ``(B, K, *spatial)``
        - y: ``(B,)`` or ``(B, 1, *spatial)``, integer
        - ignore_mask: ``(B,)`` or ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.losses import dlr
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
        >>> [round(v, 4) for v in dlr(logits, torch.tensor([0, 1])).tolist()]
        [-0.6667, 0.6667]
        >>> [round(v, 4) for v in dlr(10 * logits + 5, torch.tensor([0, 1])).tolist()]
        [-0.6667, 0.6667]
    """
    check_labels(logits, y)
    if logits.shape[1] < 3:
        return margin(logits, y, ignore_mask=ignore_mask)
    z_true, z_other = _true_and_other(logits, y)
    top = logits.topk(3, dim=1).values
    ratio = -(z_true - z_other) / (top[:, 0] - top[:, 2] + 1e-12)
    return _reduce(ratio, _keep(logits, ignore_mask))


_LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss", {
    "ce": ce, "dice": dice, "dice_ce": dice_ce, "segpgd": segpgd, "cospgd": cospgd, "dlr": dlr, "margin": margin,
    "cosine": cosine_distance,
})
LOSS_NAMES: tuple[str, ...] = _LOSSES.names()  # a closed set: nothing registers losses later
STEP_DEPENDENT: frozenset[str] = frozenset({"segpgd"})
# Losses whose targeted form is not the untargeted one minimised (their voxel weights depend
# on whether a voxel is at the label: for a target, "at the target" plays that part).
_TARGETED: dict[str, Callable[..., torch.Tensor]] = {"segpgd": segpgd_targeted, "cospgd": cospgd_targeted}


def get_loss(name: str, *, targeted: bool = False) -> LossFn:
    """The per-sample loss called ``name`` (one of ``LOSS_NAMES``).

    Args:
        name: a loss name, e.g. "ce", "dice", "dice_ce", "segpgd", "cospgd", "dlr", "margin".
        targeted: the form a targeted attack minimises (``y`` = the target): SegPGD and
            CosPGD have their own (:func:`segpgd_targeted`, :func:`cospgd_targeted`); the
            other losses are the same function.

    Returns:
        The loss function, with the :class:`LossFn` signature.

    Raises:
        ValueError: ``name`` is not a known loss (the message lists the allowed names).

    Example:
        >>> import torch
        >>> from medrobust.losses import get_loss
        >>> loss = get_loss("margin")
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])).tolist()
        [-2.0, 1.0]
        >>> get_loss("l1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: unknown loss 'l1'; allowed: ...
    """
    loss = _LOSSES[name]  # ValueError listing the allowed names
    return _TARGETED.get(name, loss) if targeted else loss
