"""The ``python`` source: a factory in the user's package (``"package.module:factory"``) + weights.

Importing the module runs its code, as any ``import`` does; the weights are read without
unpickling (safetensors, or ``torch.load(weights_only=True)``). In the Python API,
:func:`from_module` takes a network already in memory.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from medrobust.models.sources.base import (
    SourceError,
    SourceModel,
    load_weights,
    normalization_spec,
    read_state_dict,
    source_model,
)
from medrobust.units import IntensityMap


def build(target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Import ``package.module:factory`` and call it with ``kwargs``.

    Args:
        target: ``"package.module:factory"`` (a function or a class).
        kwargs: keyword arguments of the factory.

    Returns:
        The network the factory returned.

    Raises:
        SourceError: a malformed target, a module that cannot be imported, no such
            attribute, a factory that raises or returns something that is not an ``nn.Module``.

    Example:
        >>> build("torch.nn:Conv2d", {"in_channels": 1, "out_channels": 2, "kernel_size": 1})
        Conv2d(1, 2, kernel_size=(1, 1), stride=(1, 1))
        >>> build("torch.nn:Identityy")
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: python 'torch.nn:Identityy': module 'torch.nn' has no attribute 'Identityy'
    """
    source = f"python {target!r}"
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SourceError(f"{source}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an import runs the module's code, which may raise anything
        raise SourceError(f"{source}: cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SourceError(f"{source}: module {module_name!r} has no attribute {attr!r}" if factory is None
                          else f"{source}: {attr!r} is not callable")
    try:
        network = factory(**(kwargs or {}))
    except Exception as err:  # the user's factory raises whatever a bad argument triggers
        raise SourceError(f"{source}: factory failed with kwargs {kwargs or {}} ({type(err).__name__}: {err})") from None
    if not isinstance(network, nn.Module):
        raise SourceError(f"{source}: the factory returned {type(network).__name__}, not a torch.nn.Module")
    return network


def load(target: str, *, classes: Sequence[str], weights: str | Path | None = None,
         kwargs: dict[str, Any] | None = None, normalization: str | None = None,
         roi_size: Sequence[int] | None = None, spatial_dims: int | None = None,
         in_channels: int | None = None) -> SourceModel:
    """Build a network with a factory and load its weights.

    Args:
        target: ``"package.module:factory"``.
        classes: class names, one per output channel.
        weights: ``.safetensors`` or a ``torch.save`` state dict; None keeps the factory's weights.
        kwargs: keyword arguments of the factory.
        normalization: the data normalisation spec (``"ct:-175,250"``, ``"zscore"``,
            ``"linear-hu:OFFSET,SCALE,LO,HI"``, ...); None keeps the data's default.
        roi_size: sliding-window ROI, or None.
        spatial_dims: 2 or 3, when known (shown by ``inspect-model``).
        in_channels: the input channels, when known.

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: see :func:`build`, and weights that cannot be read or do not fit.

    Example:
        >>> m = load("torch.nn:Conv2d", classes=["bg", "fg"], kwargs={"in_channels": 1, "out_channels": 2,
        ...          "kernel_size": 1}, normalization="ct:-175,250")
        >>> m.info.architecture, m.intensity.scale
        ('python:Conv2d', 425.0)
    """
    network = build(target, kwargs)
    if weights is not None:
        source = f"python {target!r}"
        load_weights(network, read_state_dict(weights, source), weights, source)
    return source_model(network, "python", target, classes, normalization=normalization, roi_size=roi_size,
                        spatial_dims=spatial_dims, in_channels=in_channels)


def from_module(network: nn.Module, classes: Sequence[str], *, intensity: IntensityMap | None = None,
                normalization: str | None = None, roi_size: Sequence[int] | None = None,
                name: str = "in-memory") -> SourceModel:
    """A network already in memory as a :class:`SourceModel` (the Python API's source).

    Args:
        network: the network (image in model units -> logits).
        classes: class names, one per output channel.
        intensity: the fixed raw -> model map of its data (budgets in HU/raw follow it).
        normalization: a normalisation spec instead of ``intensity`` (e.g. ``"zscore"``).
        roi_size: sliding-window ROI, or None.
        name: recorded as the model's source.

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: both ``intensity`` and ``normalization`` given, or no classes.

    Example:
        >>> import torch
        >>> m = from_module(torch.nn.Conv3d(1, 2, 1), ["bg", "fg"], intensity=IntensityMap.ct_window(-175, 250))
        >>> m.normalization
        'linear-hu:-175.0,425.0,0.0,1.0'
    """
    if intensity is not None and normalization is not None:
        raise SourceError(f"python {name}: give intensity or normalization, not both")
    spec = normalization_spec(intensity) if intensity is not None else normalization
    return source_model(network, "python", name, classes, normalization=spec, roi_size=roi_size)
