"""A checkpoint and the data split it is applied to, opened the way the model was trained.

One place for what every command that evaluates a model needs: the split normalised as in
training (``model.json``'s ``extra.normalization``) and resized for classifiers
(``extra.image_size``), and the check that the dataset's classes are the model's.
"""
from __future__ import annotations

from pathlib import Path

from medrobust.data.sources import Split, open_split
from medrobust.evaluation.specs import ModelSpec
from medrobust.evaluation.types import LoadedModel
from medrobust.models.checkpoint import CheckpointInfo
from medrobust.models.sources import SourceModel, load_source
from medrobust.models.sources import checkpoint as checkpoint_source

SplitKey = tuple[str | None, tuple[int, ...] | None, tuple[float, ...] | None]


def split_key(info: CheckpointInfo, normalization: str | None = None) -> SplitKey:
    """(normalisation, image size, spacing) a model's data is opened with; models sharing it share a split.

    Args:
        info: the checkpoint's parsed ``model.json``.
        normalization: an override (a grid's ``data.normalization``); default the checkpoint's.

    Returns:
        (normalisation spec or None, spatial size of classifiers or None, the voxel spacing in
        mm the source states (nnU-Net's plan) or None: volumes are resampled to it).

    Example:
        >>> from pathlib import Path
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="unet", kwargs={}, classes=["bg", "fg"],
        ...                       extra={"normalization": "zscore"})
        >>> split_key(info)
        ('zscore', None, None)
    """
    extra = info.extra or {}
    size = tuple(extra.get("image_size") or ()) or None  # classifiers: every split resized as in training
    spacing = tuple(float(s) for s in extra.get("spacing") or ()) or None
    return normalization or extra.get("normalization"), size, spacing


def channel_mismatch(info: CheckpointInfo, split: Split) -> str | None:
    """Why a split's images do not fit a model's input channels (naming the first such image), or None.

    Args:
        info: the model's checkpoint info (``kwargs["in_channels"]``; a model without it is
            not checked).
        split: the opened data split.

    Returns:
        A sentence naming the image file and both channel counts, or None when they fit.

    Example:
        >>> import torch
        >>> from pathlib import Path
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="unet", kwargs={"in_channels": 1}, classes=["bg"])
        >>> case = {"image": torch.zeros(2, 4, 4), "meta": {"source": "img.nii.gz"}}
        >>> channel_mismatch(info, Split([case], ["bg"], "segmentation", 2, 2, Path("d.json"), "zscore"))
        'image img.nii.gz has 2 channel(s) but the model takes 1'
    """
    wanted = info.kwargs.get("in_channels")
    if wanted is None:
        return None
    for i in range(len(split.dataset)):
        item = split.dataset[i]
        if int(item["image"].shape[0]) != wanted:
            source = item["meta"]["source"]
            name = source if isinstance(source, (str, Path)) else ", ".join(map(str, source))
            return f"image {name} has {int(item['image'].shape[0])} channel(s) but the model takes {wanted}"
    return None


def class_mismatch(info: CheckpointInfo, split: Split) -> str | None:
    """Why a split does not fit a model: image channels (:func:`channel_mismatch`) or classes, or None.

    Args:
        info: the model's checkpoint info.
        split: the opened data split.

    Returns:
        A sentence naming the image file and channel counts, or both class lists, or None
        when they fit.

    Example:
        >>> from pathlib import Path
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="unet", kwargs={}, classes=["bg", "fg"])
        >>> split = Split([], ["bg", "a", "b"], "segmentation", 3, 1, Path("d.json"), "zscore")
        >>> class_mismatch(info, split)
        "model predicts 2 classes ['bg', 'fg'] but the data declares 3 ['bg', 'a', 'b']"
    """
    channels = channel_mismatch(info, split)
    if channels:
        return channels
    named = split.task == "classification"  # a class is its name (folder); segmentation labels are indices
    if len(split.classes) != len(info.classes) or (named and split.classes != info.classes):
        return (f"model predicts {len(info.classes)} classes {info.classes} but the data declares "
                f"{len(split.classes)} {split.classes}")
    return None


def load_spec(spec: ModelSpec) -> SourceModel:
    """Load the model a grid's ``models:`` entry names, from its one source.

    Args:
        spec: the validated entry.

    Returns:
        The :class:`~medrobust.models.sources.SourceModel`.

    Raises:
        ValueError: the source cannot be read or does not fit (the message names it).

    Example:
        >>> spec = ModelSpec(name="conv", python="torch.nn:Conv2d", classes=["bg", "fg"],
        ...                  kwargs={"in_channels": 1, "out_channels": 2, "kernel_size": 1})
        >>> load_spec(spec).info.architecture
        'python:Conv2d'
    """
    kind, target = spec.source
    return load_source(kind, target, **spec.source_options)


def load_model(checkpoint: Path | SourceModel, data: Path, split: str, *, name: str | None = None,
               max_cases: int | None = None) -> LoadedModel:
    """Load ``checkpoint`` (eval mode) and ``split`` of ``data`` opened as the model was trained.

    Args:
        checkpoint: the ``model.json``, or a model already loaded from any source.
        data: a Decathlon ``dataset.json``, a class-folder root or a CSV.
        split: train, val or test.
        name: the model's display name (default: the checkpoint's folder name).
        max_cases: only the first N cases.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        ValueError: the checkpoint or the data cannot be read, or an image's channels or the
            classes do not fit the model (the message names the files).
    """
    source = checkpoint if isinstance(checkpoint, SourceModel) else checkpoint_source.load(checkpoint)
    info = source.info
    normalization, size, spacing = split_key(info)
    opened = open_split(data, split, normalization=normalization, max_cases=max_cases, spatial_size=size,
                        spacing=spacing)
    problem = class_mismatch(info, opened)
    if problem:
        raise ValueError(f"{info.path}: {problem} ({data} split {split!r})")
    return LoadedModel(name or info.path.parent.name or "model", source.network.eval(), info, opened)
