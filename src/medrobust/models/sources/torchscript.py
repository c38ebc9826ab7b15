"""The ``torchscript`` source: a ``torch.jit.save`` file, opt-in.

A TorchScript file holds code as well as weights, and loading it runs that code: it is
read only when the caller says so (``trust_code: true`` in a grid, ``--trust-code`` on the
command line). Use it for files you would run anyway.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medrobust.models.sources.base import SourceError, SourceModel, source_model


def load(path: str | Path, *, classes: Sequence[str], trust_code: bool = False,
         normalization: str | None = None, roi_size: Sequence[int] | None = None,
         spatial_dims: int | None = None, in_channels: int | None = None) -> SourceModel:
    """Load a TorchScript model, which runs the code the file holds; refused unless ``trust_code``.

    Args:
        path: the TorchScript file.
        classes: class names, one per output channel.
        trust_code: the caller's consent to run the file's code.
        normalization: the data normalisation spec; None keeps the data's default.
        roi_size: sliding-window ROI, or None.
        spatial_dims: 2 or 3, when known.
        in_channels: the input channels, when known.

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: no consent, a missing file, or a file TorchScript cannot load.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 2, 1)), f"{tmp.name}/m.pt")
        >>> load(f"{tmp.name}/m.pt", classes=["bg", "fg"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: torchscript .../m.pt: loading TorchScript runs the code ...
        >>> load(f"{tmp.name}/m.pt", classes=["bg", "fg"], trust_code=True).info.architecture
        'torchscript:RecursiveScriptModule'
        >>> tmp.cleanup()
    """
    path = Path(path)
    source = f"torchscript {path}"
    if not trust_code:
        raise SourceError(f"{source}: loading TorchScript runs the code stored in the file; pass trust_code: true "
                          "(grid) or --trust-code (command line) if you trust it")
    if not path.is_file():
        raise SourceError(f"{source}: file not found")
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as err:
        raise SourceError(f"{source}: not a TorchScript file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return source_model(network, "torchscript", path, classes, normalization=normalization, roi_size=roi_size,
                        spatial_dims=spatial_dims, in_channels=in_channels,
                        notes=("TorchScript: the file's own code ran when it was loaded",))
