"""A checkpoint and the data split it is applied to, opened the way the model was trained.

One place for what every command that evaluates a model needs: the split normalised as in
training (``model.json``'s ``extra.normalization``) and resized for classifiers
(``extra.image_size``), and the check that the dataset's classes are the model's.
"""
from __future__ import annotations

from pathlib import Path

from medrobust.data.sources import Split, open_split
from medrobust.evaluation.types import LoadedModel
from medrobust.models.checkpoint import CheckpointInfo, load_checkpoint

SplitKey = tuple[str | None, tuple[int, ...] | None]


def split_key(info: CheckpointInfo, normalization: str | None = None) -> SplitKey:
    """(normalisation, image size) a model's data is opened with; models sharing it share a split.

    Args:
        info: the checkpoint's parsed ``model.json``.
        normalization: an override (a grid's ``data.normalization``); default the checkpoint's.

    Returns:
        (normalisation spec or None, spatial size of classifiers or None).

    Example:
        >>> from pathlib import Path
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="unet", kwargs={}, classes=["bg", "fg"],
        ...                       extra={"normalization": "zscore"})
        >>> split_key(info)
        ('zscore', None)
    """
    extra = info.extra or {}
    size = tuple(extra.get("image_size") or ()) or None  # classifiers: every split resized as in training
    return normalization or extra.get("normalization"), size


def class_mismatch(info: CheckpointInfo, split: Split) -> str | None:
    """Why a split's classes do not fit a model (count, and for classifiers the names), or None.

    Args:
        info: the model's checkpoint info; split: the opened data split.

    Returns:
        A sentence naming both class lists, or None when they fit.

    Example:
        >>> from pathlib import Path
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="unet", kwargs={}, classes=["bg", "fg"])
        >>> split = Split([], ["bg", "a", "b"], "segmentation", 3, 1, Path("d.json"), "zscore")
        >>> class_mismatch(info, split)
        "model predicts 2 classes ['bg', 'fg'] but the data declares 3 ['bg', 'a', 'b']"
    """
    named = split.task == "classification"  # a class is its name (folder); segmentation labels are indices
    if len(split.classes) != len(info.classes) or (named and split.classes != info.classes):
        return (f"model predicts {len(info.classes)} classes {info.classes} but the data declares "
                f"{len(split.classes)} {split.classes}")
    return None


def load_model(checkpoint: Path, data: Path, split: str, *, name: str | None = None,
               max_cases: int | None = None) -> LoadedModel:
    """Load ``checkpoint`` (eval mode) and ``split`` of ``data`` opened as the model was trained.

    Args:
        checkpoint: the ``model.json``.
        data: a Decathlon ``dataset.json``, a class-folder root or a CSV.
        split: train, val or test.
        name: the model's display name (default: the checkpoint's folder name).
        max_cases: only the first N cases.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        ValueError: the checkpoint or the data cannot be read, or their classes differ
            (the message names the files).
    """
    model, info = load_checkpoint(checkpoint)
    normalization, size = split_key(info)
    opened = open_split(data, split, normalization=normalization, max_cases=max_cases, spatial_size=size)
    problem = class_mismatch(info, opened)
    if problem:
        raise ValueError(f"{checkpoint}: {problem} ({data} split {split!r})")
    return LoadedModel(name or checkpoint.parent.name or "model", model.eval(), info, opened)
