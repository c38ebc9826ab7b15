"""Opening a checkpoint together with the data it is applied to."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medrobust.data.sources import Split, open_split
from medrobust.models.checkpoint import CheckpointInfo, load_checkpoint


@dataclass
class ModelAndData:
    """A checkpoint's model (in eval mode) and header, with the split it is applied to."""

    model: nn.Module
    info: CheckpointInfo
    split: Split


def open_model_and_data(checkpoint: Path, data: Path, split: str, *, max_cases: int | None = None) -> ModelAndData:
    """Load ``checkpoint`` and ``split`` of ``data`` normalised as the model was trained.

    Raises ValueError when the dataset's classes differ from the checkpoint's (count, and
    for classifiers the names).
    """
    model, info = load_checkpoint(checkpoint)
    normalization = (info.extra or {}).get("normalization")
    size = (info.extra or {}).get("image_size")  # classifiers: every split resized as in training
    opened = open_split(data, split, normalization=normalization, max_cases=max_cases,
                        spatial_size=tuple(size) if size else None)
    named = opened.task == "classification"  # a class is its name (folder); segmentation labels are indices
    if len(opened.classes) != len(info.classes) or (named and opened.classes != info.classes):
        raise ValueError(f"{checkpoint}: model predicts {len(info.classes)} classes {info.classes} but {data} "
                         f"split {split!r} declares {len(opened.classes)} {opened.classes}")
    model.eval()
    return ModelAndData(model=model, info=info, split=opened)
