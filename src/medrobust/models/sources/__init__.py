"""Model sources: bring a model from where it already lives (design.md section 3).

Each source is one module with a ``load(target, **options) -> SourceModel``:

=============== ========================================================================
``checkpoint``  medrobust's ``model.json`` + ``model.safetensors``
``bundle``      a MONAI bundle folder (``configs/inference.json`` + ``models/model.pt``)
``python``      ``"package.module:factory"`` + ``weights`` + ``kwargs`` (and, in Python,
                :func:`~medrobust.models.sources.python.from_module` for a network in memory)
``torchscript`` a TorchScript file; opt-in (``trust_code``), as loading it runs its code
``nnunet``      an nnU-Net v2 trained-model folder + ``fold`` + ``configuration``
                (extra ``medrobust[nnunet]``)
=============== ========================================================================

Nothing is unpickled: weights are safetensors or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from medrobust.models.sources.base import SourceError, SourceModel, normalization_spec
from medrobust.models.sources.python import from_module

SOURCE_KINDS: tuple[str, ...] = ("checkpoint", "bundle", "python", "torchscript", "nnunet")


def load_source(kind: str, target: str | Path, **options: Any) -> SourceModel:
    """Load a model from a source of kind ``kind`` (options are that source's keywords).

    Args:
        kind: one of :data:`SOURCE_KINDS`.
        target: the file, folder or ``"package.module:factory"``.
        **options: the source's options (``classes``, ``weights``, ``kwargs``, ``fold``, ...).

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: an unknown kind, options the source does not take, or whatever the
            source raises (the message names the source).

    Example:
        >>> m = load_source("python", "torch.nn:Conv2d", classes=["bg", "fg"],
        ...                 kwargs={"in_channels": 1, "out_channels": 2, "kernel_size": 1})
        >>> m.kind, m.classes
        ('python', ['bg', 'fg'])
        >>> load_source("onnx", "m.onnx")
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: unknown model source 'onnx'; allowed: checkpoint, bundle, python, torchscript, nnunet
    """
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown model source {kind!r}; allowed: {', '.join(SOURCE_KINDS)}")
    load = importlib.import_module(f"medrobust.models.sources.{kind}").load
    params = [p for p in inspect.signature(load).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - {p.name for p in params})
    missing = [p.name for p in params if p.default is p.empty and p.name not in options]
    if unknown or missing:
        problem = f"unknown option(s) {', '.join(unknown)}" if unknown else f"missing option(s) {', '.join(missing)}"
        raise SourceError(f"{kind} {target}: {problem}; this source takes: {', '.join(p.name for p in params) or 'none'}")
    return load(target, **options)


def guess_kind(target: str | Path) -> str:
    """The source kind a path or name looks like (for ``medrobust inspect-model``).

    Args:
        target: a file, a folder or ``"package.module:factory"``.

    Returns:
        ``bundle`` (a folder with ``configs/``), ``nnunet`` (a folder with ``plans.json``),
        ``checkpoint`` (``model.json`` or a folder with one), ``torchscript`` (another
        existing file) or ``python`` (``module:factory``).

    Raises:
        SourceError: nothing of that name, and not a ``module:factory`` either.

    Example:
        >>> guess_kind("torch.nn:Conv2d")
        'python'
    """
    path = Path(target)
    if path.is_dir():
        for marker, kind in (("configs", "bundle"), ("plans.json", "nnunet"), ("model.json", "checkpoint")):
            if (path / marker).exists():
                return kind
        raise SourceError(f"{path}: a folder but not a MONAI bundle (configs/), an nnU-Net result (plans.json) "
                          "or a medrobust checkpoint (model.json)")
    if path.is_file():
        return "checkpoint" if path.suffix == ".json" else "torchscript"
    if ":" in str(target) and "/" not in str(target):
        return "python"
    raise SourceError(f"{target}: no such file or folder, and not 'package.module:factory'")


__all__ = ["SOURCE_KINDS", "SourceError", "SourceModel", "from_module", "guess_kind", "load_source",
           "normalization_spec"]
