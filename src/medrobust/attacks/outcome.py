"""Which iterate an attack keeps: the outcome of each iterate and the per-sample worst case.

A robustness number is only honest if, per sample, the attack returns the iterate that
hurts the *metric* most, not the one with the highest loss: a 3-class classifier under
BIM can go CE 0.24 -> 1.05 (misclassified) -> 1.08 (correct again), and keeping the
highest loss would return the correctly classified point. The rule (design.md section 5):

- ``keep="metric"`` (default): lexicographic per sample, first the outcome
  (:func:`sample_metric`: correct/incorrect for classifiers, foreground Dice for
  segmentation; lower is worse for the model; for a targeted attack
  :func:`target_metric`, the fraction of voxels predicted as their target, higher is
  worse), then, among iterates with the same outcome, the highest loss. For a classifier this keeps a misclassified iterate whenever one was seen (the
  highest-loss one among them), like AutoAttack's ``x_best_adv``.
- ``keep="loss"``: the highest loss (lowest when targeted), as before.

The outcome is computed on the input's device from the forward the loop already makes:
no extra forward and no host synchronisation per step. This module is written here
rather than taken from MONAI because MONAI's Dice (``compute_dice``) validates and
one-hot encodes the whole volume; a confusion count per sample is one ``scatter_add``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from medrobust.units import expand_to

__all__ = ["KEEP_RULES", "IterateTracker", "KeepRule", "foreground_dice", "sample_metric", "target_metric", "worse"]

KeepRule = Literal["metric", "loss"]
KEEP_RULES: tuple[str, ...] = ("metric", "loss")


def foreground_dice(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean Dice over the foreground classes 1..K-1 per sample, on the input's device.

    A class absent from both prediction and label scores 1 (as
    :func:`medrobust.metrics.dice_per_class`, which it matches); no validation and no
    host synchronisation, so it can run at every attack step.

    Args:
        pred: predicted labels ``(B, 1, *spatial)`` (integer).
        y: reference labels ``(B, 1, *spatial)`` (integer, in ``[0, num_classes)``).
        num_classes: K, background included (K >= 2).

    Returns:
        ``(B,)`` float32 on ``pred``'s device.

    Shape:
        - pred, y: ``(B, 1, *spatial)``
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> y = torch.tensor([[[0, 1, 1, 2]]])
        >>> pred = torch.tensor([[[0, 1, 0, 2]]])
        >>> foreground_dice(pred, y, 3)          # class 1: 2*1/(1+2), class 2: 1
        tensor([0.8333])
    """
    B, K = y.shape[0], num_classes
    index = (y.reshape(B, -1).long() * K + pred.reshape(B, -1).long())
    counts = torch.zeros(B, K * K, device=y.device, dtype=torch.float32)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    confusion = counts.reshape(B, K, K)                           # [b, true, predicted]
    inter = confusion.diagonal(dim1=1, dim2=2)[:, 1:]
    total = confusion.sum(2)[:, 1:] + confusion.sum(1)[:, 1:]
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return dice.mean(1)


def sample_metric(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample quality of the hard prediction; lower is a stronger (untargeted) attack.

    Classification: 1 if correct, else 0. Segmentation: the mean Dice over the foreground
    classes 1..K-1 (:func:`foreground_dice`). Computed on ``logits``' device.

    Args:
        logits: ``(B, K)`` or ``(B, K, *spatial)``.
        y: labels ``(B,)`` or ``(B, 1, *spatial)`` (integer class indices; the target
            when the attack is targeted).

    Returns:
        ``(B,)`` in the dtype of ``logits``.

    Example:
        >>> import torch
        >>> sample_metric(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]))
        tensor([1., 0.])
        >>> y = torch.zeros(1, 1, 4, 4, dtype=torch.long); y[..., :2] = 1
        >>> logits = torch.cat([-y, y], 1).float()      # predicts y exactly
        >>> sample_metric(logits, y)
        tensor([1.])
    """
    if y.ndim == 1:
        return (logits.argmax(1) == y).to(logits.dtype)
    return foreground_dice(logits.argmax(1, keepdim=True), y, logits.shape[1]).to(logits.dtype)


def target_metric(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample success of a targeted attack: the fraction of voxels predicted as their target.

    Classification: 1 if the prediction is the target, else 0. Segmentation: the voxel
    accuracy against the target map (a map that moves one organ to the background rises
    with every voxel moved; a Dice against the target map would stay flat until the organ
    is gone). Computed on ``logits``' device.

    Args:
        logits: ``(B, K)`` or ``(B, K, *spatial)``.
        target: target classes ``(B,)`` or ``(B, 1, *spatial)``.

    Returns:
        ``(B,)`` in [0, 1], the dtype of ``logits``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[2.0, 2.0, 0.0]], [[0.0, 0.0, 2.0]]]])     # predicts 0, 0, 1
        >>> target_metric(logits, torch.tensor([[[[0, 1, 1]]]]))
        tensor([0.6667])
    """
    hit = logits.argmax(1) == (target if target.ndim == 1 else target[:, 0])
    return hit.reshape(hit.shape[0], -1).to(logits.dtype).mean(1)


def worse(rule: KeepRule, gain: torch.Tensor, harm: torch.Tensor, ref_gain: torch.Tensor,
          ref_harm: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where a candidate beats a reference iterate by ``rule`` (the module docstring).

    Args:
        rule: ``"metric"`` (harm first, then gain) or ``"loss"`` (gain only).
        gain: ``(B,)`` the candidate's loss (or -loss when targeted).
        harm: ``(B,)`` its -metric (or +metric when targeted).
        ref_gain: ``(B,)`` the reference's gain.
        ref_harm: ``(B,)`` the reference's harm.

    Returns:
        ``(B,)`` bool.

    Example:
        >>> import torch
        >>> gain, harm = torch.tensor([0.5, 2.0]), torch.tensor([0.0, -1.0])
        >>> worse("metric", gain, harm, torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])).tolist()
        [True, True]
        >>> worse("loss", gain, harm, torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])).tolist()
        [False, True]
    """
    if rule == "loss":
        return gain > ref_gain
    return (harm > ref_harm) | ((harm == ref_harm) & (gain > ref_gain))


@dataclass
class IterateTracker:
    """The per-sample worst iterate seen so far, over steps and restarts.

    ``offer`` each evaluated iterate with its gain (the loss, or -loss when targeted) and
    its harm (``-metric``, or ``+metric`` when targeted: higher is worse for the model);
    the tracker keeps, per sample, the better one by ``rule`` (module docstring). With
    early stopping, a sample's first failing iterate is kept and the sample is frozen.

    Attributes:
        rule: ``"metric"`` or ``"loss"``.
        x: ``(B, C, *spatial)`` the kept iterates.
        gain, harm: ``(B,)`` the kept iterates' gain and harm.
        done: ``(B,)`` bool, samples that failed (early stopping), or None when it is off.

    Example:
        >>> import torch
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> tracker = IterateTracker.start(x, "metric", early_stop=False)
        >>> tracker.offer(x + 1, gain=torch.tensor([1.0, 1.0]), harm=torch.tensor([0.0, -1.0]))
        >>> tracker.offer(x + 2, gain=torch.tensor([2.0, 2.0]), harm=torch.tensor([-1.0, -1.0]))
        >>> tracker.x[:, 0, 0, 0]           # sample 0 keeps the harmful iterate, sample 1 the higher loss
        tensor([1., 2.])
    """

    rule: KeepRule
    x: torch.Tensor
    gain: torch.Tensor
    harm: torch.Tensor
    done: torch.Tensor | None = None

    @classmethod
    def start(cls, x: torch.Tensor, rule: KeepRule, early_stop: bool) -> IterateTracker:
        """An empty tracker for the batch ``x`` (nothing kept yet: gain and harm at -inf).

        Args:
            x: clean images ``(B, C, *spatial)``.
            rule: ``"metric"`` or ``"loss"``.
            early_stop: keep a ``done`` mask (freeze samples at their first failure).

        Returns:
            The tracker.
        """
        B = x.shape[0]
        done = torch.zeros(B, dtype=torch.bool, device=x.device) if early_stop else None
        return cls(rule, x, x.new_full((B,), -torch.inf), x.new_full((B,), -torch.inf), done)

    def better(self, gain: torch.Tensor, harm: torch.Tensor) -> torch.Tensor:
        """``(B,)`` True where (gain, harm) beats the kept iterate by the rule.

        Args:
            gain: ``(B,)`` loss (or -loss when targeted) of the candidate.
            harm: ``(B,)`` -metric (or +metric when targeted) of the candidate.

        Returns:
            ``(B,)`` bool.
        """
        return worse(self.rule, gain, harm, self.gain, self.harm)

    def offer(self, x_adv: torch.Tensor, gain: torch.Tensor, harm: torch.Tensor,
              fails: torch.Tensor | None = None) -> None:
        """Keep ``x_adv`` for the samples where it is better (and not frozen).

        Args:
            x_adv: ``(B, C, *spatial)`` an evaluated iterate.
            gain: ``(B,)`` its gain.
            harm: ``(B,)`` its harm.
            fails: ``(B,)`` bool, samples that fail at this iterate (early stopping), or None.
        """
        better = self.better(gain, harm)
        if self.done is not None and fails is not None:
            newly = fails & ~self.done
            better = (better & ~self.done) | newly
            self.done.logical_or_(newly)
        self.gain = torch.where(better, gain, self.gain)
        self.harm = torch.where(better, harm, self.harm)
        self.x = torch.where(expand_to(better, x_adv), x_adv, self.x)
