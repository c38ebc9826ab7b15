"""The ``nnunet`` source: an nnU-Net v2 trained-model folder (extra ``medrobust[nnunet]``).

The folder is nnU-Net's ``<Trainer>__<Plans>__<configuration>`` result: ``plans.json``,
``dataset.json`` and ``fold_<k>/checkpoint_final.pth``. The network is rebuilt from the
plan's ``architecture`` with ``dynamic_network_architectures`` as nnU-Net builds it for
inference (no deep supervision; only classes of that package and ``torch.nn`` are
accepted), so nnU-Net's trainer lookup (which needs timm) is never imported. The
checkpoint is read with ``torch.load(weights_only=True)``, allow-listing only numpy's
dtypes and scalar reconstructor for the plain numbers nnU-Net logs.

nnU-Net reads images with their axes reversed (SimpleITK order) and then applies the
plan's ``transpose_forward``; the network is wrapped in :class:`AxisOrder`, which does the
same to medrobust's (x, y, z) tensors and undoes it on the logits, so the attack perturbs
the voxels nnU-Net sees. Intensities: ``CTNormalization`` (clip to the foreground's 0.5 and
99.5 percentiles, z-score with the plan's mean and std) is the fixed IntensityMap in HU;
``ZScoreNormalization`` is medrobust's per-case z-score (non-zero voxels' statistics);
``NoNormalization``, ``RescaleTo01Normalization`` and ``RGBTo01Normalization`` map to
``none``, ``minmax`` and ``minmax:0,255``. Images are resampled to the plan's spacing when
they are opened (the model states its spacing; evaluation resamples with MONAI's
``Spacingd``, trilinear, where nnU-Net uses third-order splines), so the attack perturbs the
image the network sees and the report states that spacing. Mirroring test-time augmentation
(``mirror=True``, off by default) is part of the differentiable model:
:class:`MirrorAverage` averages the logits over the checkpoint's
``inference_allowed_mirroring_axes``, as nnU-Net's predictor does. Not done here: the crop
to the non-zero region.
"""
from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.models.sources.base import (
    SourceError,
    SourceModel,
    load_weights,
    normalization_spec,
    source_model,
)
from medrobust.units import IntensityMap

CHECKPOINT = "checkpoint_final.pth"
_PER_CASE = {"ZScoreNormalization": "zscore", "NoNormalization": "none", "RescaleTo01Normalization": "minmax",
             "RGBTo01Normalization": "minmax:0,255"}
_IMPORTABLE = ("dynamic_network_architectures.", "torch.nn.")  # what a plan may name as a class


class AxisOrder(nn.Module):
    """Run ``network`` on the input with its spatial axes permuted; permute the logits back.

    Args:
        network: the network, trained on ``x.permute(0, 1, *(2 + p for p in order))``.
        order: for each network axis, the input's spatial axis it takes.

    Example:
        >>> net = AxisOrder(nn.Identity(), (2, 1, 0))
        >>> x = torch.rand(1, 1, 2, 3, 4)
        >>> bool(torch.equal(net(x), x))
        True
    """

    def __init__(self, network: nn.Module, order: Sequence[int]) -> None:
        super().__init__()
        self.network, self.order = network, tuple(int(o) for o in order)
        self.inverse = tuple(int(i) for i in np.argsort(self.order))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in the input's axis order.

        Args:
            x: ``(B, C, *spatial)`` in model units.

        Returns:
            ``(B, K, *spatial)``.
        """
        y = self.network(x.permute(0, 1, *(2 + o for o in self.order)))
        return y.permute(0, 1, *(2 + i for i in self.inverse))


class MirrorAverage(nn.Module):
    """nnU-Net's mirroring test-time augmentation, differentiable: the mean of the logits over flips.

    The prediction on ``x`` plus, for every non-empty combination of ``axes``, the
    prediction on ``x`` flipped along them, flipped back; divided by their count (nnU-Net's
    ``_internal_maybe_mirror_and_predict``).

    Args:
        network: the network.
        axes: spatial axes (0-based, the network's order) it may mirror.

    Example:
        >>> net = MirrorAverage(nn.Conv3d(1, 2, 3, padding=1), (0, 1, 2))
        >>> len(net.combinations), net(torch.rand(1, 1, 4, 4, 4)).shape
        (7, torch.Size([1, 2, 4, 4, 4]))
    """

    def __init__(self, network: nn.Module, axes: Sequence[int]) -> None:
        super().__init__()
        self.network = network
        dims = [int(a) + 2 for a in axes]
        self.combinations = [c for k in range(len(dims)) for c in itertools.combinations(dims, k + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The averaged logits.

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, K, *spatial)``.
        """
        out = self.network(x)
        for dims in self.combinations:
            out = out + torch.flip(self.network(torch.flip(x, dims)), dims)
        return out / (len(self.combinations) + 1)


def _read_json(path: Path, source: str) -> dict[str, Any]:
    if not path.is_file():
        raise SourceError(f"{source}: {path.name} not found; not an nnU-Net trained-model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{source}: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{source}: {path} must hold a JSON object")
    return data


def _configuration(plans: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise SourceError(f"{source}: plans.json has no configuration {name!r}; allowed: {', '.join(configs)}")
    conf = dict(configs[name])
    parent = conf.pop("inherits_from", None)
    return {**_configuration(plans, parent, source), **conf} if parent else conf


def _locate(name: str | None, source: str) -> Any:
    if name is None:
        return None
    if not name.startswith(_IMPORTABLE):
        raise SourceError(f"{source}: plans.json names class {name!r}; only classes of "
                          f"{' and '.join(p.rstrip('.') for p in _IMPORTABLE)} are built")
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise SourceError(f"{source}: cannot import {name!r} ({err}); install the extra medrobust[nnunet]") from None


def build_network(arch: dict[str, Any], in_channels: int, out_channels: int, source: str) -> nn.Module:
    """The network of a plan's ``architecture`` entry, built as nnU-Net's ``get_network_from_plans``.

    Args:
        arch: ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}``.
        in_channels: the dataset's channels.
        out_channels: the number of labels.
        source: how messages name the folder.

    Returns:
        The network (deep supervision off).

    Raises:
        SourceError: a class outside ``dynamic_network_architectures``/``torch.nn`` or
            arguments the class refuses.

    Example:
        >>> build_network({"network_class_name": "os.system"}, 1, 2, "nnunet run")
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: nnunet run: plans.json names class 'os.system'; only classes of dynamic_network_architectures and torch.nn are built
    """
    kwargs = dict(arch.get("arch_kwargs") or {})
    for key in arch.get("_kw_requires_import") or ():
        kwargs[key] = _locate(kwargs.get(key), source)
    cls = _locate(str(arch.get("network_class_name")), source)
    try:
        network = cls(input_channels=in_channels, num_classes=out_channels, deep_supervision=False, **kwargs)
    except Exception as err:  # the architecture's constructor raises whatever a bad plan triggers
        raise SourceError(f"{source}: cannot build {arch.get('network_class_name')} from plans.json "
                          f"({type(err).__name__}: {err})") from None
    if not isinstance(network, nn.Module):
        raise SourceError(f"{source}: {arch.get('network_class_name')} is not a torch.nn.Module")
    return network


def read_checkpoint(path: Path, source: str) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """``network_weights`` and mirroring axes of nnU-Net's ``checkpoint_final.pth``, read with ``weights_only=True``.

    Only numpy's ``dtype`` classes and scalar reconstructor are allow-listed, for the
    numbers nnU-Net logs; nothing that runs code is.

    Args:
        path: the checkpoint.
        source: how messages name the folder.

    Returns:
        The network's state dict, and ``inference_allowed_mirroring_axes`` (default all three).

    Raises:
        SourceError: a missing file, a file that needs more than plain types, or no
            ``network_weights``.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> torch.save({"network_weights": {"w": torch.ones(1)}, "_best_ema": np.float64(0.9)}, tmp / "c.pth")
        >>> read_checkpoint(tmp / "c.pth", "nnunet run")
        ({'w': tensor([1.])}, (0, 1, 2))
    """
    if not path.is_file():
        raise SourceError(f"{source}: {path.relative_to(path.parents[1])} not found (fold or checkpoint missing)")
    dtypes = [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    scalar = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray").scalar
    # a checkpoint written under numpy 1.x names the reconstructor numpy.core.multiarray.scalar
    allowed: list[Any] = [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"), *dtypes]
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler raises UnpicklingError, RuntimeError, ...
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise SourceError(f"{source}: cannot read {path} with weights_only=True ({detail})") from None
    weights = checkpoint.get("network_weights") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict):
        raise SourceError(f"{source}: {path} has no 'network_weights' (not an nnU-Net v2 checkpoint)")
    axes = checkpoint.get("inference_allowed_mirroring_axes") or (0, 1, 2)
    return dict(weights), tuple(int(a) for a in axes)


def _intensity(conf: dict[str, Any], plans: dict[str, Any], source: str) -> tuple[str, list[str]]:
    schemes = conf.get("normalization_schemes") or []
    if len(schemes) != 1:
        raise SourceError(f"{source}: {len(schemes)} input channels; medrobust maps one channel's normalisation")
    scheme = schemes[0]
    if scheme in _PER_CASE:
        note = ["nnU-Net's ZScoreNormalization takes its statistics per case as medrobust's zscore does, but over "
                "all voxels (or its non-zero mask, outside which it writes 0); medrobust uses the non-zero voxels' "
                "statistics for every voxel"] if scheme == "ZScoreNormalization" else []
        return _PER_CASE[scheme], note
    if scheme != "CTNormalization":
        raise SourceError(f"{source}: normalisation scheme {scheme!r} cannot be mapped to raw units; allowed: "
                          f"CTNormalization, {', '.join(_PER_CASE)}")
    props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0") or {}
    try:
        mean, std = float(props["mean"]), max(float(props["std"]), 1e-8)
        low, high = float(props["percentile_00_5"]), float(props["percentile_99_5"])
    except (KeyError, TypeError, ValueError) as err:
        raise SourceError(f"{source}: plans.json foreground_intensity_properties_per_channel['0'] lacks {err}") from None
    imap = IntensityMap(mean, std, ((low - mean) / std, (high - mean) / std), "HU")
    return normalization_spec(imap), [f"CT: intensities are clipped to [{low:g}, {high:g}] HU; most background "
                                      "voxels lie below the lower clip, where a perturbation changes nothing"]


def load(folder: str | Path, *, fold: int | str = 0, configuration: str | None = None,
         mirror: bool = False) -> SourceModel:
    """Load an nnU-Net v2 trained model (network, weights, classes, intensity map, patch, spacing).

    Args:
        folder: the ``<Trainer>__<Plans>__<configuration>`` folder.
        fold: 0-4 or ``"all"``.
        configuration: a configuration of ``plans.json`` (default: the folder name's last part).
        mirror: nnU-Net's mirroring test-time augmentation inside the model (attacks then
            differentiate through it); off by default.

    Returns:
        The :class:`SourceModel` (its network wrapped in :class:`AxisOrder`).

    Raises:
        SourceError: no plans.json/dataset.json/fold/checkpoint, a 2D or region-based
            model, an unknown configuration, or weights that do not fit (keys named).

    Example:
        >>> import tempfile
        >>> load(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.models.sources.base.SourceError: nnunet ...: plans.json not found; not an nnU-Net trained-model folder
    """
    folder = Path(folder)
    source = f"nnunet {folder}"
    if not folder.is_dir():
        raise SourceError(f"{source}: not a folder (an nnU-Net trained model holds plans.json and fold_*/)")
    plans, dataset = _read_json(folder / "plans.json", source), _read_json(folder / "dataset.json", source)
    name = configuration or folder.name.split("__")[-1]
    conf = _configuration(plans, name, source)
    labels = dataset.get("labels") or {}
    if not labels or not all(isinstance(v, int) for v in labels.values()):
        raise SourceError(f"{source}: dataset.json labels must map names to integers (region-based models are "
                          f"not supported), got {labels!r}")
    classes = [k for k, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    in_channels = len(dataset.get("channel_names") or dataset.get("modality") or {})
    patch = [int(p) for p in conf.get("patch_size") or []]
    if len(patch) != 3:
        raise SourceError(f"{source}: configuration {name!r} is {len(patch)}D; medrobust loads 3D nnU-Net models")
    network = build_network(conf.get("architecture") or {}, in_channels, len(classes), source)
    weights = folder / f"fold_{fold}" / CHECKPOINT
    state, mirror_axes = read_checkpoint(weights, source)
    load_weights(network, state, weights, source)
    spec, notes = _intensity(conf, plans, source)
    transpose = [int(t) for t in plans.get("transpose_forward") or (0, 1, 2)]
    order = [(2, 1, 0)[t] for t in transpose]  # network axis j takes our axis order[j]
    ours = np.argsort(order)
    spacing = [float(s) for s in conf.get("spacing") or []]
    notes.append(f"images are resampled to the plan's spacing {' x '.join(f'{spacing[i]:g}' for i in ours)} mm "
                 "(trilinear; nnU-Net uses third-order splines) and attacked there; nnU-Net's crop to the non-zero "
                 "region is not done")
    notes.append(f"mirroring test-time augmentation over axes {list(mirror_axes)} (nnU-Net's order), inside the "
                 "attacked model" if mirror else "mirroring test-time augmentation off (mirror: true turns it on)")
    net: nn.Module = MirrorAverage(network, mirror_axes) if mirror else network
    return source_model(AxisOrder(net, order), "nnunet", folder, classes, normalization=spec,
                        roi_size=[patch[i] for i in ours], spatial_dims=3, in_channels=in_channels,
                        spacing=[spacing[i] for i in ours] if len(spacing) == 3 else None,
                        architecture=f"nnunet:{type(network).__name__}", notes=notes)
