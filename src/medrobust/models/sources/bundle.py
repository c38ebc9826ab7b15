"""The ``bundle`` source: a MONAI bundle folder (``configs/inference.json|yaml`` + ``models/model.pt``).

MONAI's :class:`~monai.bundle.ConfigParser` builds ``network_def`` (and ``preprocessing``,
``inferer``) as the bundle's own inference does, so the config's ``_target_`` classes and
``$`` expressions run, as they would under ``monai.bundle run``. The weights are read with
``torch.load(weights_only=True)``. The preprocessing's intensity transform becomes the
model's IntensityMap where it is linear: ``ScaleIntensityRange(d)`` (window to
[b_min, b_max], clipped or not) and ``NormalizeIntensity(d)`` with fixed ``subtrahend`` and
``divisor`` (or, with ``nonzero: true`` and no statistics given, the per-case z-score).
Anything else that changes intensities is an error naming the transform. A ``modality``
of ``CT`` in ``metadata.json`` makes the raw unit HU.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from numbers import Number
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

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHTS = Path("models") / "model.pt"


def _config_file(folder: Path) -> Path:
    for name in CONFIG_NAMES:
        if (folder / "configs" / name).is_file():
            return folder / "configs" / name
    raise SourceError(f"bundle {folder}: no configs/{' or configs/'.join(CONFIG_NAMES)}; not a MONAI bundle folder")


def _flatten(transform: Any) -> Iterator[Any]:
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):  # a Compose (possibly nested)
        for t in inner:
            yield from _flatten(t)
    else:
        yield transform


def _scale_range(t: Any, hu: bool) -> IntensityMap:
    a_min, a_max, unit = float(t.a_min), float(t.a_max), "HU" if hu else "raw"
    if t.b_min is None or t.b_max is None:  # MONAI then only divides by the window's width
        return IntensityMap(a_min, a_max - a_min, None, unit)
    b_min, b_max = float(t.b_min), float(t.b_max)
    if not (a_max > a_min and b_max > b_min):
        raise ValueError(f"needs a_max > a_min and b_max > b_min, got a=({a_min}, {a_max}), b=({b_min}, {b_max})")
    scale = (a_max - a_min) / (b_max - b_min)
    return IntensityMap(a_min - b_min * scale, scale, (b_min, b_max) if t.clip else None, unit)


def _normalize(t: Any, hu: bool) -> IntensityMap | str:
    sub, div = t.subtrahend, t.divisor
    if sub is None and div is None and t.nonzero:
        return "zscore"  # medrobust's per-case z-score: statistics of the non-zero voxels
    if isinstance(sub, Number) and isinstance(div, Number) and not t.nonzero:
        return IntensityMap(float(sub), float(div), None, "HU" if hu else "raw")  # type: ignore[arg-type]
    raise ValueError(f"subtrahend={sub!r}, divisor={div!r}, nonzero={t.nonzero} is not linear in raw units; "
                     "fixed scalar subtrahend and divisor, or nonzero: true with neither, can be mapped")


def intensity_spec(preprocessing: Any, source: str, hu: bool = False) -> str | None:
    """The data normalisation spec equivalent to a bundle's preprocessing intensity transform.

    Args:
        preprocessing: the instantiated ``preprocessing`` (a Compose or a transform).
        source: how messages name the bundle.
        hu: raw units are Hounsfield units (a CT bundle).

    Returns:
        A ``linear:``/``linear-hu:`` spec, ``"zscore"``, or None when no transform changes
        intensities.

    Raises:
        SourceError: a transform that changes intensities non-linearly, or more than one.

    Example:
        >>> from monai.transforms import Compose, EnsureChannelFirstd, ScaleIntensityRanged, HistogramNormalized
        >>> intensity_spec(Compose([EnsureChannelFirstd("image"),
        ...                         ScaleIntensityRanged("image", -175, 250, 0, 1, clip=True)]), "bundle b", hu=True)
        'linear-hu:-175.0,425.0,0.0,1.0'
        >>> intensity_spec(Compose([HistogramNormalized("image")]), "bundle b")
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: bundle b: preprocessing transform HistogramNormalized changes intensities non-linearly; medrobust maps only ScaleIntensityRange(d) and NormalizeIntensity(d) to raw units
    """
    found: list[tuple[str, IntensityMap | str]] = []
    for t in _flatten(preprocessing):
        name = type(t).__name__
        inner = getattr(t, "scaler", None) or getattr(t, "normalizer", None) or t
        try:
            if type(inner).__name__ == "ScaleIntensityRange":
                found.append((name, _scale_range(inner, hu)))
            elif type(inner).__name__ == "NormalizeIntensity":
                found.append((name, _normalize(inner, hu)))
            elif type(t).__module__.startswith("monai.transforms.intensity") or name.startswith("Lambda"):
                raise SourceError(f"{source}: preprocessing transform {name} changes intensities non-linearly; "
                                  "medrobust maps only ScaleIntensityRange(d) and NormalizeIntensity(d) to raw units")
        except ValueError as err:
            if isinstance(err, SourceError):
                raise
            raise SourceError(f"{source}: preprocessing transform {name}: {err}") from None
    if len(found) > 1:
        raise SourceError(f"{source}: preprocessing has {len(found)} intensity transforms "
                          f"({', '.join(n for n, _ in found)}); medrobust maps exactly one to raw units")
    if not found:
        return None
    value = found[0][1]
    return value if isinstance(value, str) else normalization_spec(value)


def _grid_notes(preprocessing: Any) -> tuple[list[float] | None, list[str]]:
    """(spacing from Spacing(d), a note per transform that changes the grid) of the preprocessing."""
    spacing, notes = None, []
    for t in _flatten(preprocessing):
        if type(t).__module__.startswith(("monai.transforms.spatial", "monai.transforms.croppad")):
            pixdim = getattr(getattr(t, "spacing_transform", t), "pixdim", None)
            if pixdim is not None:
                spacing = [float(v) for v in pixdim]
            notes.append(f"preprocessing transform {type(t).__name__} changes the grid, which medrobust does not "
                         "repeat: evaluate data already resampled and oriented as the bundle expects")
    return spacing, notes


def _meta(folder: Path) -> dict[str, Any]:
    path = folder / "configs" / "metadata.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"bundle {folder}: {path} is not valid JSON ({err})") from None
    return meta if isinstance(meta, dict) else {}


def _classes(meta: dict[str, Any], network_def: dict[str, Any]) -> list[str] | None:
    pred = (meta.get("network_data_format") or {}).get("outputs", {}).get("pred", {})
    channel_def = pred.get("channel_def")
    if isinstance(channel_def, dict) and channel_def:
        return [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
    count = pred.get("num_channels") or network_def.get("out_channels") or network_def.get("num_classes")
    return [f"class{i}" for i in range(int(count))] if isinstance(count, int) else None


def _parsed(parser: Any, key: str, source: str) -> Any:
    try:
        return parser.get_parsed_content(key)
    except Exception as err:  # a config instantiates user classes, which raise anything
        raise SourceError(f"{source}: cannot build {key!r} ({type(err).__name__}: {err})") from None


def load(folder: str | Path, *, classes: Sequence[str] | None = None, weights: str | Path | None = None,
         roi_size: Sequence[int] | None = None) -> SourceModel:
    """Load a MONAI bundle's network, weights, intensity map, classes and ROI.

    Args:
        folder: the bundle folder (holding ``configs/`` and ``models/``).
        classes: class names (default ``metadata.json``'s ``channel_def``, else ``class0..``).
        weights: a weights file instead of ``models/model.pt``.
        roi_size: sliding-window ROI (default the config's ``inferer`` ``roi_size``).

    Returns:
        The :class:`SourceModel`.

    Raises:
        SourceError: not a bundle folder, no ``network_def``, a network that cannot be
            built, weights that cannot be read or do not fit, or a non-linear preprocessing.

    Example:
        >>> import tempfile
        >>> load(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: bundle ...: no configs/inference.json or configs/inference.yaml or configs/inference.yml; not a MONAI bundle folder
    """
    from monai.bundle import ConfigParser  # lazy: only bundles need it

    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"bundle {folder}: not a folder (a MONAI bundle holds configs/ and models/)")
    config, meta = _config_file(folder), _meta(folder)
    source = f"bundle {folder}"
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
    except Exception as err:  # JSON/YAML parsers raise their own types
        raise SourceError(f"{source}: cannot read {config} ({type(err).__name__}: {err})") from None
    raw: dict[str, Any] = parser.config  # type: ignore[assignment]
    if "network_def" not in raw:
        raise SourceError(f"{source}: {config.name} has no 'network_def' (the network the bundle runs)")
    parser["bundle_root"] = str(folder)
    network = _parsed(parser, "network_def", source)
    if not isinstance(network, nn.Module):
        raise SourceError(f"{source}: 'network_def' built {type(network).__name__}, not a torch.nn.Module")
    weights_path = Path(weights) if weights is not None else folder / WEIGHTS
    load_weights(network, read_state_dict(weights_path, source), weights_path, source)
    image = (meta.get("network_data_format") or {}).get("inputs", {}).get("image", {})
    hu = str(image.get("modality", "")).upper() == "CT"
    pre = _parsed(parser, "preprocessing", source) if "preprocessing" in raw else []
    spec = intensity_spec(pre, source, hu)
    spacing, notes = _grid_notes(pre)
    inferer = raw.get("inferer")
    if roi_size is None and isinstance(inferer, dict) and "roi_size" in inferer:
        roi_size = [int(r) for r in _parsed(parser, "inferer#roi_size", source)]
    net_def = raw["network_def"] if isinstance(raw["network_def"], dict) else {}
    names = list(classes) if classes is not None else _classes(meta, net_def)
    if names is None:
        raise SourceError(f"{source}: no class names in metadata.json (network_data_format.outputs.pred.channel_def) "
                          "and no out_channels in network_def; give `classes:`")
    shape = image.get("spatial_shape")
    dims = net_def.get("spatial_dims") if isinstance(net_def.get("spatial_dims"), int) else (
        len(shape) if isinstance(shape, list) else None)
    pred_type = (meta.get("network_data_format") or {}).get("outputs", {}).get("pred", {}).get("type", "image")
    if spec is None:
        notes.append("preprocessing changes no intensities: model units are raw units")
    return source_model(network, "bundle", folder, names, normalization=spec or "none", roi_size=roi_size, spacing=spacing,
                        spatial_dims=dims, in_channels=image.get("num_channels") or net_def.get("in_channels"),
                        task="segmentation" if pred_type == "image" else "classification",
                        architecture=f"bundle:{type(network).__name__}", notes=notes)
