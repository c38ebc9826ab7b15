"""Metrics for segmentation, classification and perturbations, computed with MONAI.

Segmentation: ``pred`` is labels ``(B, 1, *spatial)`` (int) or logits ``(B, K, *spatial)``
(argmax is taken); ``y`` is labels ``(B, 1, *spatial)`` in ``[0, num_classes)``.
Classification: ``pred`` is logits ``(B, K)`` or labels ``(B,)``; ``y`` is labels ``(B,)``.
Perturbations: ``x`` and ``x_adv`` are images ``(B, C, *spatial)`` in model units.
Per-sample results are float tensors ``(B,)`` / ``(B, K')`` on CPU; batch scores are floats.

Modules: ``segmentation`` (Dice, HD95, surface Dice), ``classification`` (accuracy,
confusion matrix, balanced accuracy, AUROC) and ``perturbation`` (SSIM, PSNR, norms); this
package re-exports their public names.
"""
from __future__ import annotations

from medrobust.metrics.classification import accuracy, auroc, balanced_accuracy, confusion_matrix
from medrobust.metrics.perturbation import perturbation_norms, psnr, ssim
from medrobust.metrics.segmentation import Spacing, dice_per_class, hd95, surface_dice

__all__ = ["Spacing", "accuracy", "auroc", "balanced_accuracy", "confusion_matrix", "dice_per_class", "hd95",
           "perturbation_norms", "psnr", "ssim", "surface_dice"]
