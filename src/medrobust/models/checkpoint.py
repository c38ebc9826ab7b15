"""Checkpoints: ``model.safetensors`` (weights) + ``model.json`` (how to rebuild and use them).

Nothing is ever unpickled: weights are read with safetensors, the header is JSON. Both files
are written atomically (temp file + rename); ``model.json`` is written last, so a folder
with a ``model.json`` always has the matching weights.

``model.json`` fields: ``format`` ("medrobust-checkpoint/1"), ``architecture`` and
``kwargs`` (for :func:`~medrobust.models.registry.build_model`), ``classes`` (names, one
per output channel), ``intensity`` (``IntensityMap.to_dict()`` or null), ``roi_size``
(window size for sliding-window inference or null), ``recipe`` (training recipe),
``medrobust_version``, ``spatial_dims``, ``in_channels``, ``extra`` (free JSON).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import medrobust
from medrobust.data.io import atomic_path, write_json_atomic
from medrobust.models.registry import build_model, model_spec
from medrobust.models.wrappers import SlidingWindow
from medrobust.units import IntensityMap

FORMAT = "medrobust-checkpoint/1"
WEIGHTS_NAME = "model.safetensors"
HEADER_NAME = "model.json"
_SHOWN = 10  # keys listed per category in a mismatch message


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file.

    A subclass of ValueError, so ``except ValueError`` catches it too.

    Example:
        >>> try:
        ...     read_checkpoint_info("/nonexistent/model.json")
        ... except CheckpointError as err:
        ...     print(err)
        /nonexistent/model.json: checkpoint file not found
    """


@dataclass(frozen=True)
class CheckpointInfo:
    """The parsed ``model.json`` (``path`` is the JSON file itself).

    Attributes:
        path: the ``model.json`` file.
        architecture, kwargs: the registry name and kwargs for
            :func:`~medrobust.models.registry.build_model`.
        classes: class names, one per output channel.
        intensity: the data's IntensityMap, or None.
        roi_size: window size for sliding-window inference, or None.
        recipe: the training recipe ("standard", "pgd_at", ...).
        medrobust_version: the version that wrote it.
        spatial_dims, in_channels: from ``kwargs`` (None when absent).
        extra: free JSON written with the checkpoint.

    Example:
        >>> import tempfile
        >>> from medrobust.models.registry import build_model
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        >>> info = read_checkpoint_info(save_checkpoint(tmp.name, net, classes=["background", "lesion"]))
        >>> info.architecture, info.classes, info.spatial_dims, info.weights_path.name
        ('unet', ['background', 'lesion'], 2, 'model.safetensors')
        >>> tmp.cleanup()
    """

    path: Path
    architecture: str
    kwargs: dict[str, Any]
    classes: list[str]
    intensity: IntensityMap | None = None
    roi_size: tuple[int, ...] | None = None
    recipe: str = "standard"
    medrobust_version: str = ""
    spatial_dims: int | None = None
    in_channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        """The ``model.safetensors`` file beside ``model.json``.

        Example:
            >>> from pathlib import Path
            >>> CheckpointInfo(Path("run/model.json"), "unet", {}, ["background"]).weights_path.as_posix()
            'run/model.safetensors'
        """
        return self.path.with_name(WEIGHTS_NAME)


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a SlidingWindow / DistributedDataParallel wrapper."""
    while isinstance(model, (SlidingWindow, torch.nn.parallel.DistributedDataParallel)):
        model = model.model if isinstance(model, SlidingWindow) else model.module
    return model


def save_checkpoint(out_dir: str | Path, model: nn.Module, *, classes: Sequence[str],
                    intensity: IntensityMap | None = None, roi_size: Sequence[int] | None = None,
                    recipe: str = "standard", extra: dict[str, Any] | None = None,
                    architecture: str | None = None, kwargs: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json``; return the JSON path.

    ``architecture`` and ``kwargs`` default to the model's spec from ``build_model``.
    Wrappers (SlidingWindow, DDP) are unwrapped; their weights are the inner model's.

    Args:
        out_dir: folder to write into (created if missing).
        model: the network (built by ``build_model``, or give ``architecture``/``kwargs``).
        classes: class names, one per output channel.
        intensity: the data's IntensityMap (recorded so attacks use the same units).
        roi_size: window for sliding-window inference, or None.
        recipe: name of the training recipe (default "standard").
        extra: free JSON-able metadata.
        architecture: overrides the model's recorded registry name.
        kwargs: override the model's recorded constructor arguments.

    Returns:
        The path of ``model.json``.

    Raises:
        ValueError: no spec and no architecture/kwargs, classes that do not match
            ``out_channels``, or kwargs/extra that are not JSON-serialisable.

    Example:
        >>> import tempfile
        >>> from medrobust.models.registry import build_model
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        >>> path = save_checkpoint(tmp.name, net, classes=["background", "lesion"], roi_size=(64, 64))
        >>> path.name, sorted(p.name for p in path.parent.iterdir())
        ('model.json', ['model.json', 'model.safetensors'])
        >>> save_checkpoint(tmp.name, net, classes=["only one"])
        Traceback (most recent call last):
        ...
        ValueError: classes has 1 names but the model has out_channels=2
        >>> tmp.cleanup()
    """
    net = _unwrap(model)
    if architecture is None or kwargs is None:
        spec = model_spec(net)
        architecture = architecture or spec["architecture"]
        kwargs = spec["kwargs"] if kwargs is None else kwargs
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of class names, got the string {classes!r}")
    classes = [str(c) for c in classes]
    k = kwargs.get("out_channels")
    if k is not None and len(classes) != k:
        raise ValueError(f"classes has {len(classes)} names but the model has out_channels={k}")
    header = {
        "format": FORMAT, "architecture": architecture, "kwargs": kwargs, "classes": classes,
        "intensity": intensity.to_dict() if intensity is not None else None,
        "roi_size": [int(r) for r in roi_size] if roi_size is not None else None,
        "recipe": recipe, "medrobust_version": medrobust.__version__,
        "spatial_dims": kwargs.get("spatial_dims"), "in_channels": kwargs.get("in_channels"),
        "extra": extra or {},
    }
    try:
        json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint kwargs/extra must be JSON-serialisable: {err}") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (tied or viewed weights)
    state = {name: t.detach().cpu().contiguous().clone() for name, t in net.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "architecture": architecture})
    write_json_atomic(out / HEADER_NAME, header)
    return out / HEADER_NAME


def _mismatch_message(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = [f"{path}: weights do not fit {type(model).__name__}"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("differing shapes", shapes)):
        if items:
            more = f" ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            parts.append(f"{label} ({len(items)}): {', '.join(items[:_SHOWN])}{more}")
    return "; ".join(parts)


def load_state_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``.safetensors`` state dict into ``model`` (strict); return the model.

    Wrappers (SlidingWindow, DDP) are unwrapped: the weights go into the inner network.

    Args:
        model: the network to fill, in place.
        path: the ``.safetensors`` file.

    Returns:
        ``model`` itself.

    Raises:
        CheckpointError: missing/corrupt file, NaN or Inf weights, or missing keys,
            unexpected keys and differing shapes (the first few of each are listed).

    Example:
        >>> import tempfile
        >>> from medrobust.models.registry import build_model
        >>> tmp = tempfile.TemporaryDirectory()
        >>> kw = dict(spatial_dims=2, in_channels=1, channels=(4, 8), strides=(2,))
        >>> info = read_checkpoint_info(save_checkpoint(tmp.name, build_model("unet", out_channels=2, **kw),
        ...                                             classes=["background", "lesion"]))
        >>> net = load_state_into(build_model("unet", out_channels=2, **kw), info.weights_path)
        >>> load_state_into(build_model("unet", out_channels=3, **kw), info.weights_path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.models.checkpoint.CheckpointError: ...: weights do not fit UNet; differing shapes (4): ...
        >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    broken = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        more = f" ... (+{len(broken) - _SHOWN} more)" if len(broken) > _SHOWN else ""
        raise CheckpointError(f"{path}: weights hold NaN or Inf values in {len(broken)} tensor(s) "
                              f"({', '.join(broken[:_SHOWN])}{more}); the checkpoint is unusable "
                              "(a diverged or damaged training run)")
    net = _unwrap(model)
    problem = _mismatch_message(path, net, state)
    if problem:
        raise CheckpointError(problem)
    net.load_state_dict(state, strict=True)
    return model


def read_checkpoint_info(json_path: str | Path) -> CheckpointInfo:
    """Parse and validate ``model.json`` (or a folder holding one) without building the model.

    Args:
        json_path: ``model.json`` or the folder holding it.

    Returns:
        The parsed :class:`CheckpointInfo`.

    Raises:
        CheckpointError: missing file, invalid JSON, another format, a missing or
            mistyped field (named), or a bad ``intensity``.

    Example:
        >>> import tempfile
        >>> from medrobust.models.registry import build_model
        >>> from medrobust.units import IntensityMap
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        >>> _ = save_checkpoint(tmp.name, net, classes=["background", "lesion"],
        ...                     intensity=IntensityMap.ct_window(-175, 250), roi_size=(64, 64))
        >>> info = read_checkpoint_info(tmp.name)              # the folder works too
        >>> info.roi_size, info.intensity.scale
        ((64, 64), 425.0)
        >>> tmp.cleanup()
    """
    path = Path(json_path)
    if path.is_dir():
        path = path / HEADER_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"{path}: not a medrobust checkpoint (format {found!r}, expected {FORMAT!r})")
    _check_fields(path, d)
    try:
        intensity = IntensityMap.from_dict(d["intensity"]) if d.get("intensity") else None
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: bad 'intensity' ({err})") from err
    roi = d.get("roi_size")
    return CheckpointInfo(
        path=path, architecture=d["architecture"], kwargs=d["kwargs"], classes=[str(c) for c in d["classes"]],
        intensity=intensity, roi_size=tuple(int(r) for r in roi) if roi else None,
        recipe=str(d.get("recipe", "standard")), medrobust_version=str(d.get("medrobust_version", "")),
        spatial_dims=d.get("spatial_dims"), in_channels=d.get("in_channels"), extra=d.get("extra") or {},
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_fields(path: Path, d: dict[str, Any]) -> None:
    """Every field of ``model.json`` has its type; the first one that does not is named."""
    expected: list[tuple[str, bool, str]] = [
        ("architecture", isinstance(d.get("architecture"), str) and bool(d.get("architecture")), "a registry name"),
        ("kwargs", isinstance(d.get("kwargs"), dict), "an object of network arguments"),
        ("classes", isinstance(d.get("classes"), list) and all(isinstance(c, (str, int)) for c in d.get("classes") or []),
         "a list of class names, one per output channel"),
        ("intensity", d.get("intensity") is None or isinstance(d.get("intensity"), dict), "an object or null"),
        ("roi_size", d.get("roi_size") is None or (isinstance(d.get("roi_size"), list) and len(d["roi_size"]) in (2, 3)
                                                    and all(_is_count(r) for r in d["roi_size"])),
         "a list of 2 or 3 positive integers (e.g. [64, 64, 64]) or null"),
        ("recipe", isinstance(d.get("recipe", ""), str), "a string"),
        ("spatial_dims", d.get("spatial_dims") in (None, 2, 3), "2, 3 or null"),
        ("in_channels", d.get("in_channels") is None or _is_count(d.get("in_channels")), "a positive integer or null"),
        ("extra", d.get("extra") is None or isinstance(d.get("extra"), dict), "an object or null"),
    ]
    for key, ok, what in expected:
        if not ok:
            if key not in d:
                raise CheckpointError(f"{path}: field {key!r} missing; it must be {what}")
            raise CheckpointError(f"{path}: field {key!r} must be {what}, got {json.dumps(d[key])}")
    dims, roi = d.get("spatial_dims"), d.get("roi_size")
    if dims is not None and roi is not None and len(roi) != dims:
        raise CheckpointError(f"{path}: field 'roi_size' {roi} has {len(roi)} sizes but spatial_dims is {dims}")


def load_checkpoint(json_path: str | Path, expected_architecture: str | None = None
                    ) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model of ``model.json`` (or its folder), load its weights, set eval mode.

    Args:
        json_path: path to ``model.json`` or to the folder holding it.
        expected_architecture: if given, the checkpoint's architecture must equal it.

    Returns:
        (the model in eval mode, its :class:`CheckpointInfo`).

    Raises:
        CheckpointError: missing file, bad JSON, architecture mismatch, unbuildable kwargs,
            class names that do not match the network's output channels, or weights that
            do not fit (keys and shapes listed) or are not finite.

    Example:
        >>> import tempfile, torch
        >>> from medrobust.models.registry import build_model
        >>> tmp = tempfile.TemporaryDirectory()
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        >>> path = save_checkpoint(tmp.name, net, classes=["background", "lesion"])
        >>> model, info = load_checkpoint(path)
        >>> type(model).__name__, model.training
        ('UNet', False)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool(torch.equal(model(x), net.eval()(x)))
        True
        >>> load_checkpoint(path, expected_architecture="segresnet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.models.checkpoint.CheckpointError: ...: checkpoint architecture is 'unet', expected 'segresnet'
        >>> tmp.cleanup()
    """
    info = read_checkpoint_info(json_path)
    if expected_architecture is not None and info.architecture != expected_architecture:
        raise CheckpointError(f"{info.path}: checkpoint architecture is {info.architecture!r}, "
                              f"expected {expected_architecture!r}")
    try:
        model = build_model(info.architecture, **info.kwargs)
    except Exception as err:  # a network's constructor raises whatever a bad argument triggers
        raise CheckpointError(f"{info.path}: cannot build {info.architecture!r} from field 'kwargs' "
                              f"{json.dumps(info.kwargs)} ({type(err).__name__}: {err})") from err
    load_state_into(model, info.weights_path)
    channels = model_spec(model)["kwargs"].get("out_channels")
    if channels is not None and channels != len(info.classes):
        raise CheckpointError(f"{info.path}: field 'classes' names {len(info.classes)} classes {info.classes} but the "
                              f"network has {channels} output channels; give one class name per channel")
    return model.eval(), info
