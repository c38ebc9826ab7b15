"""Validation metrics for model selection (never on the test split)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from medrobust.metrics import balanced_accuracy, dice_per_class
from medrobust.models.inference import infer


def validate(model: nn.Module, dataset: Dataset, *, roi_size: Sequence[int] | None, overlap: float,
             device: torch.device, num_classes: int) -> dict[str, float]:
    """Score ``model`` on every case of ``dataset``, one case at a time.

    Returns:
        Segmentation: ``dice_<k>`` for each foreground class k (background excluded) and
        ``score`` = their mean. Classification: ``accuracy``, ``balanced_accuracy`` and
        ``score`` = balanced accuracy.
    """
    logits_all, labels_all, dices = [], [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        x = item["image"].unsqueeze(0).to(device)
        y = torch.as_tensor(item["label"]).to(device)
        logits = infer(model, x, roi_size, overlap)
        if y.ndim == 0:
            logits_all.append(logits.float().cpu())
            labels_all.append(y.reshape(1).cpu())
        else:
            dices.append(dice_per_class(logits.float(), y.unsqueeze(0), num_classes).cpu())
    if dices:
        per_class = torch.cat(dices).nanmean(dim=0)
        out = {f"dice_{k + 1}": float(v) for k, v in enumerate(per_class)}
        out["score"] = float(per_class.nanmean())
        return out
    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    acc = float((logits.argmax(1) == labels).float().mean())
    bacc = float(balanced_accuracy(logits, labels))
    return {"accuracy": acc, "balanced_accuracy": bacc, "score": bacc}
