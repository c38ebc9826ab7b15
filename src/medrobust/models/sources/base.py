"""What every model source returns (:class:`SourceModel`) and the helpers they share.

A model source turns what a user already has (a medrobust checkpoint, a MONAI bundle, a
factory in their own package, a TorchScript file, an nnU-Net result folder) into one
:class:`SourceModel`: the network (image in model units -> logits) and a
:class:`~medrobust.models.checkpoint.CheckpointInfo` that the evaluation reads as it reads
a medrobust checkpoint (classes, IntensityMap, ROI, and in ``extra`` the data
normalisation spec, the spacing and the task).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from medrobust.data.transforms import Normalization
from medrobust.models.checkpoint import CheckpointInfo, _mismatch_message
from medrobust.units import IntensityMap

_NESTED_KEYS = ("state_dict", "model", "network_weights")  # where trainers nest a state dict


class SourceError(ValueError):
    """A model source that cannot be read or does not fit; the message names the source.

    Example:
        >>> str(SourceError("bundle /b: configs/inference.json has no 'network_def'"))
        "bundle /b: configs/inference.json has no 'network_def'"
    """


@dataclass(frozen=True)
class SourceModel:
    """A network from a model source and what the evaluation needs to know about it.

    Attributes:
        network: image in model units -> logits, in eval mode.
        info: classes, IntensityMap, ROI, spatial dims, in channels; ``extra`` holds
            ``normalization`` (the spec the data is opened with), ``source``, ``spacing``
            and ``task``.
        kind: the source kind (``checkpoint``, ``bundle``, ``python``, ``torchscript``, ``nnunet``).
        notes: what a user should know before trusting the numbers (one sentence each).

    Example:
        >>> import torch
        >>> from medrobust.units import IntensityMap
        >>> m = source_model(torch.nn.Conv2d(1, 2, 1), "python", "demo", ["bg", "fg"],
        ...                  normalization=normalization_spec(IntensityMap.ct_window(-175, 250)))
        >>> m.classes, m.intensity.raw_unit, m.task
        (['bg', 'fg'], 'HU', 'segmentation')
    """

    network: nn.Module
    info: CheckpointInfo
    kind: str
    notes: tuple[str, ...] = field(default=())

    @property
    def classes(self) -> list[str]:
        """Class names, one per output channel."""
        return list(self.info.classes)

    @property
    def intensity(self) -> IntensityMap | None:
        """The fixed raw -> model map, or None when it is per case (z-score) or unknown."""
        return self.info.intensity

    @property
    def normalization(self) -> str | None:
        """The normalisation spec the data is opened with (None: the data's default)."""
        return self.info.extra.get("normalization")

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """The voxel spacing (mm) the model expects, when the source states one."""
        value = self.info.extra.get("spacing")
        return tuple(float(v) for v in value) if value else None

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"`` (a medrobust classifier records its ``image_size``)."""
        extra = self.info.extra
        return str(extra.get("task") or ("classification" if extra.get("image_size") else "segmentation"))


def normalization_spec(imap: IntensityMap) -> str:
    """The data normalisation spec (``linear:`` or ``linear-hu:``) that applies ``imap``.

    Args:
        imap: a fixed map (scalar offset and scale).

    Returns:
        A spec :class:`~medrobust.data.transforms.Normalization` parses back to ``imap``.

    Example:
        >>> normalization_spec(IntensityMap.ct_window(-175, 250))
        'linear-hu:-175.0,425.0,0.0,1.0'
    """
    clip = f",{float(imap.clip[0])!r},{float(imap.clip[1])!r}" if imap.clip else ""
    kind = "linear-hu" if imap.raw_unit == "HU" else "linear"
    return f"{kind}:{float(imap.offset)!r},{float(imap.scale)!r}{clip}"


def fixed_intensity(spec: str | None) -> IntensityMap | None:
    """The IntensityMap of a normalisation spec when it is the same for every case, else None.

    Args:
        spec: a normalisation spec (``"ct:-175,250"``, ``"zscore"``, ...) or None.

    Returns:
        The map, or None for per-case specs (``zscore``, ``minmax``) and None.

    Example:
        >>> fixed_intensity("ct:-175,250").scale, fixed_intensity("zscore")
        (425.0, None)
    """
    if spec is None:
        return None
    norm = Normalization.parse(spec)
    per_case = norm.kind == "zscore" or (norm.kind == "minmax" and norm.low is None)
    return None if per_case else norm.intensity_map(np.zeros(1, dtype=np.float32))


def source_model(network: nn.Module, kind: str, path: str | Path, classes: Sequence[str], *,
                 normalization: str | None = None, roi_size: Sequence[int] | None = None,
                 spatial_dims: int | None = None, in_channels: int | None = None,
                 spacing: Sequence[float] | None = None, task: str = "segmentation",
                 architecture: str | None = None, notes: Sequence[str] = ()) -> SourceModel:
    """Assemble a :class:`SourceModel` (network in eval mode) from what a source found.

    Args:
        network: the network.
        kind: the source kind.
        path: the source (file, folder or ``module:factory``), recorded in the info.
        classes: class names, one per output channel.
        normalization: the data normalisation spec; None keeps the data's default.
        roi_size: sliding-window ROI, or None.
        spatial_dims: 2 or 3, when known.
        in_channels: the input channels, when known.
        spacing: the voxel spacing (mm) the model expects, when stated.
        task: ``"segmentation"`` or ``"classification"``.
        architecture: the recorded architecture (default ``kind:ClassName``).
        notes: sentences shown by ``medrobust inspect-model``.

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: no classes, or a normalisation spec that does not parse.

    Example:
        >>> m = source_model(torch.nn.Conv3d(1, 3, 1), "python", "pkg.mod:make", ["bg", "a", "b"], roi_size=(8, 8, 8))
        >>> m.info.architecture, m.info.roi_size, m.normalization
        ('python:Conv3d', (8, 8, 8), None)
    """
    if not classes or isinstance(classes, str):
        raise SourceError(f"{kind} {path}: give the class names, one per output channel (a list), got {classes!r}")
    try:
        intensity = fixed_intensity(normalization)
    except ValueError as err:
        raise SourceError(f"{kind} {path}: {err}") from None
    extra: dict[str, Any] = {"normalization": normalization, "source": kind, "task": task,
                             "spacing": [float(s) for s in spacing] if spacing is not None else None,
                             "notes": [str(n) for n in notes]}
    info = CheckpointInfo(path=Path(str(path)), architecture=architecture or f"{kind}:{type(network).__name__}",
                          kwargs={"in_channels": in_channels} if in_channels else {},  # checked against the data
                          classes=[str(c) for c in classes], intensity=intensity,
                          roi_size=tuple(int(r) for r in roi_size) if roi_size else None, recipe="external",
                          spatial_dims=spatial_dims, in_channels=in_channels, extra=extra)
    return SourceModel(network.eval(), info, kind, tuple(notes))


def read_state_dict(path: str | Path, source: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file read with ``weights_only=True``.

    A dict nesting the state dict under ``state_dict``, ``model`` or ``network_weights``
    (as trainers save it) is unwrapped.

    Args:
        path: the weights file.
        source: how messages name the model source (``"bundle /b"``).

    Returns:
        {parameter name: tensor} on the CPU.

    Raises:
        SourceError: missing or unreadable file, or no state dict inside.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> torch.save({"state_dict": {"w": torch.ones(2)}}, f"{tmp.name}/w.pt")
        >>> read_state_dict(f"{tmp.name}/w.pt", "python demo")
        {'w': tensor([1., 1.])}
        >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{source}: weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as err:
        raise SourceError(f"{source}: cannot read weights {path} as safetensors or a weights-only torch file "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(state, dict):
        for key in _NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{source}: {path} holds no state dict (a mapping of parameter names to tensors)")
    return dict(state)


def load_weights(network: nn.Module, state: dict[str, torch.Tensor], path: str | Path, source: str) -> nn.Module:
    """Load ``state`` into ``network`` (strict) or name the first keys that do not fit.

    Args:
        network: the network to fill in place.
        state: the state dict.
        path: the weights file (named in the message).
        source: how messages name the model source.

    Returns:
        ``network``.

    Raises:
        SourceError: missing keys, unexpected keys or differing shapes (first few listed).

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> load_weights(net, {"weight": torch.ones(1, 3), "bias": torch.ones(1)}, "w.pt", "python demo")
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: python demo: w.pt: weights do not fit Linear; differing shapes (1): weight: checkpoint (1, 3) vs model (1, 2)
    """
    problem = _mismatch_message(Path(path), network, state)
    if problem:
        raise SourceError(f"{source}: {problem}")
    network.load_state_dict(state, strict=True)
    return network
