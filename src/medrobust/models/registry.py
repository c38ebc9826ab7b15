"""Model registry: a name and JSON-able keyword arguments -> an ``nn.Module`` (MONAI nets).

Every model built here carries ``model.medrobust_spec = {"architecture": name, "kwargs":
{...}}`` (the full keyword set, with ``spatial_dims``, ``in_channels`` and ``out_channels``)
so a checkpoint can be written and rebuilt without restating it. Nothing is downloaded:
``pretrained=True`` is refused. Composite models (ensembles, cooperative FTN+STN, ...)
register their own builder with :func:`register_model`; the module that registers a name
must be imported before a checkpoint of that name is loaded.

Segmentation nets map ``(B, C, *spatial)`` to logits ``(B, out_channels, *spatial)``;
classification nets (densenet121, resnet*, efficientnet-b0) map it to ``(B, out_channels)``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from monai.networks import nets
from torch import nn

from medrobust.registry import Registry

Builder = Callable[..., nn.Module]
_MODELS: Registry[Builder] = Registry("model")


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(spatial_dims, in_channels, out_channels, **kwargs)``.

    Args:
        name: the architecture name stored in checkpoints (case-sensitive).

    Returns:
        A decorator registering the builder and returning it unchanged.

    Raises:
        ValueError: ``name`` is already taken by another builder.

    A composite model registers its builder once, at import of its module::

        @register_model("my_net")
        def _build(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module: ...

    Example:
        >>> from medrobust.models.registry import register_model
        >>> register_model("unet")(lambda spatial_dims, in_channels, out_channels, **kw: None)
        Traceback (most recent call last):
            ...
        ValueError: model 'unet' is already registered
    """
    return _MODELS.register(name)


def model_names() -> tuple[str, ...]:
    """The registered architecture names, read now (composites registered later show up).

    Returns:
        The names :func:`build_model` accepts, in registration order.

    Example:
        >>> from medrobust.models.registry import model_names
        >>> model_names()[:3]
        ('unet', 'basicunet', 'segresnet')
    """
    return _MODELS.names()


def _plain(value: Any) -> Any:
    """Tuples -> lists (recursively) so a spec equals its JSON round trip."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def build_model(name: str, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                **kwargs: Any) -> nn.Module:
    """Build a registered network and attach its spec (see :func:`model_spec`).

    Args:
        name: one of :func:`model_names`.
        spatial_dims: 2 or 3.
        in_channels: image channels C.
        out_channels: number of classes K (segmentation: including background).
        **kwargs: passed to the MONAI constructor (JSON-able values to be checkpointable).

    Raises:
        ValueError: unknown name (lists the allowed ones), bad dims, or ``pretrained=True``.
    """
    builder = _MODELS[name]  # ValueError listing the allowed names
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if kwargs.get("pretrained"):
        raise ValueError("pretrained=True is not allowed: medrobust never downloads weights")
    kwargs.pop("pretrained", None)
    model = builder(spatial_dims, in_channels, out_channels, **copy.deepcopy(kwargs))
    spec_kwargs = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels}
    spec = {"architecture": name, "kwargs": _plain({**spec_kwargs, **kwargs})}
    object.__setattr__(model, "medrobust_spec", spec)  # a plain attribute, not a parameter or submodule
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"architecture": name, "kwargs": {...}}`` of a model made by :func:`build_model`.

    Raises:
        ValueError: the model was not built by the registry (pass architecture/kwargs).
    """
    spec = getattr(model, "medrobust_spec", None)
    if spec is None:
        raise ValueError(f"{type(model).__name__} has no medrobust_spec; build it with build_model() "
                         "or pass architecture= and kwargs= explicitly")
    return copy.deepcopy(spec)


@register_model("unet")
def _unet(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    kw = {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2, **kw}
    return nets.UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


@register_model("basicunet")
def _basicunet(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return nets.BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


@register_model("segresnet")
def _segresnet(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return nets.SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


@register_model("unetr")
def _unetr(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    """UNETR as in Hatamizadeh et al. 2022: a linear patch embedding (MONAI's default is a conv)."""
    if "img_size" not in kw:
        raise ValueError("unetr needs img_size= (the ROI size, each side a multiple of 16)")
    kw = {"proj_type": "perceptron", **kw}
    return nets.UNETR(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


def nnunet_kernels_strides(patch_size: Sequence[int], spacing: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """DynUNet kernel sizes and strides by nnU-Net's rule, as SEAT's ``get_kernels_strides``.

    While some axis can be halved: an axis is downsampled (stride 2) when its spacing is at
    most twice the finest and its size is at least 8, and gets a 3-wide kernel when its
    spacing is at most twice the finest (else 1); the first level has stride 1, the last
    level a 3-wide kernel on every axis.

    Args:
        patch_size: the network's input size per spatial axis.
        spacing: voxel spacing per spatial axis (mm).

    Returns:
        (kernel sizes, strides), one entry per level, each a list per spatial axis.

    Raises:
        ValueError: a patch side that a stride does not divide, or lengths that differ.

    Example:
        >>> kernels, strides = nnunet_kernels_strides((64, 64, 32), (1.0, 1.0, 2.5))
        >>> kernels
        [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
        >>> strides
        [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    """
    if len(patch_size) != len(spacing):
        raise ValueError(f"patch_size {list(patch_size)} and spacing {list(spacing)} need one entry per axis")
    sizes, spacings = [float(s) for s in patch_size], [float(s) for s in spacing]
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * len(sizes)]
    while True:
        ratio = [sp / min(spacings) for sp in spacings]
        stride = [2 if r <= 2 and size >= 8 else 1 for r, size in zip(ratio, sizes)]
        if all(s == 1 for s in stride):
            break
        if any(size % s for size, s in zip(sizes, stride)):
            raise ValueError(f"patch_size {list(patch_size)}: a side is not divisible by the strides {strides[1:]}")
        kernels.append([3 if r <= 2 else 1 for r in ratio])
        strides.append(stride)
        sizes = [size / s for size, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
    kernels.append([3] * len(sizes))
    return kernels, strides


@register_model("dynunet")
def _dynunet(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    """MONAI's DynUNet (nnU-Net's network, SEAT's ``dyunet``).

    Kernel sizes and strides are given, or follow from ``patch_size`` (and ``spacing``,
    default isotropic) by :func:`nnunet_kernels_strides`; ``upsample_kernel_size`` defaults
    to ``strides[1:]`` and the norm to instance norm, as SEAT builds it.
    """
    patch, spacing = kw.pop("patch_size", None), kw.pop("spacing", None)
    if "kernel_size" not in kw or "strides" not in kw:
        if patch is None:
            raise ValueError("dynunet needs patch_size= (to derive kernels and strides as nnU-Net) or "
                             "kernel_size= and strides=")
        kw["kernel_size"], kw["strides"] = nnunet_kernels_strides(patch, spacing or [1.0] * spatial_dims)
    kw = {"upsample_kernel_size": kw["strides"][1:], "norm_name": "instance", **kw}
    return nets.DynUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


@register_model("swinunetr")
def _swinunetr(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return nets.SwinUNETR(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


@register_model("densenet121")
def _densenet121(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                            pretrained=False, **kw)


def _resnet(factory: Callable[..., nn.Module]) -> Builder:
    def build(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
        return factory(pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels,
                       num_classes=out_channels, **kw)

    return build


register_model("resnet18")(_resnet(nets.resnet18))
register_model("resnet34")(_resnet(nets.resnet34))
register_model("resnet50")(_resnet(nets.resnet50))


@register_model("efficientnet-b0")
def _efficientnet_b0(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return nets.EfficientNetBN("efficientnet-b0", pretrained=False, progress=False, spatial_dims=spatial_dims,
                               in_channels=in_channels, num_classes=out_channels, **kw)


def _axis_product(strides: Sequence[int | Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """The product of per-level strides (an int or one per axis) along each axis."""
    total = [1] * spatial_dims
    for stride in strides:
        per_axis = [int(stride)] * spatial_dims if isinstance(stride, int) else [int(s) for s in stride]
        total = [t * s for t, s in zip(total, per_axis)]
    return tuple(total)


def network_stride(name: str, spatial_dims: int, kwargs: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """The total downsampling of a segmentation network per axis: its input sides must be multiples of it.

    Read from the registry's keyword arguments (with the builders' defaults): UNet and
    DynUNet multiply their ``strides``, SegResNet halves ``len(blocks_down) - 1`` times,
    BasicUNet pools 4 times, UNETR embeds 16-voxel patches, SwinUNETR merges patches 4
    times after a ``patch_size`` embedding. A DynUNet whose strides follow from its patch
    size by nnU-Net's rule needs sides that halve down to below 8 (32 divides the sizes up
    to 256 that do).

    Args:
        name: a registry architecture name.
        spatial_dims: 2 or 3.
        kwargs: the network's keyword arguments (as given to :func:`build_model`).

    Returns:
        One stride per spatial axis, or None for a classifier or a composite model (no
        constraint known).

    Example:
        >>> network_stride("unet", 3)
        (8, 8, 8)
        >>> network_stride("unet", 3, {"strides": [2, [2, 2, 1]]})
        (4, 4, 2)
        >>> network_stride("segresnet", 2), network_stride("resnet18", 2)
        ((8, 8), None)
    """
    kw = kwargs or {}
    if name in ("unet", "dynunet") and "strides" in kw:
        return _axis_product(kw["strides"], spatial_dims)
    fixed = {"unet": 8, "dynunet": 32, "basicunet": 16, "unetr": 16,
             "segresnet": 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1),
             "swinunetr": int(kw.get("patch_size", 2)) * 16}
    return (fixed[name],) * spatial_dims if name in fixed else None
