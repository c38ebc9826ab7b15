"""The ``checkpoint`` source: medrobust's own ``model.json`` + ``model.safetensors``."""
from __future__ import annotations

from pathlib import Path

from medrobust.models.checkpoint import load_checkpoint
from medrobust.models.sources.base import SourceModel


def load(path: str | Path) -> SourceModel:
    """Load a medrobust checkpoint (``model.json`` or its folder) as a :class:`SourceModel`.

    Its info is the checkpoint's own (:func:`~medrobust.models.checkpoint.load_checkpoint`).

    Args:
        path: ``model.json`` or the folder holding it.

    Returns:
        The model and its checkpoint info.

    Raises:
        CheckpointError: whatever :func:`~medrobust.models.checkpoint.load_checkpoint` raises.

    Example:
        >>> import tempfile
        >>> from medrobust.models.checkpoint import save_checkpoint
        >>> from medrobust.models.registry import build_model
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        >>> m = load(save_checkpoint(tmp.name, net, classes=["bg", "fg"]))
        >>> m.kind, m.classes, m.info.architecture
        ('checkpoint', ['bg', 'fg'], 'unet')
        >>> tmp.cleanup()
    """
    network, info = load_checkpoint(path)
    return SourceModel(network, info, "checkpoint")
