"""Domain assimilation (seed 004): logits = F(B(C(T(x)))) as one ``nn.Module``.

- T, :class:`TextureModule`: a small residual conv net, image -> image of the same shape,
  initialised to the identity (its last convolution starts at zero).
- C, :class:`ColourModule`: a per-pixel colour map (1x1 convolutions) from the image's
  channels to RGB in [0, 1] (sigmoid), the range the natural-image backbone was pretrained
  on; it starts as the grey image at natural-photo contrast.
- B and F: any registry classifier built with ``in_channels=3``; F is that network's own
  classifier layer (``fc`` of ResNet, ``class_layers.out`` of DenseNet), so "backbone" below
  means B and F together.

Because the whole chain is one module, every attack differentiates through T and C: no
preprocessing step can hide the gradient. ``model.assimilate(x)`` returns C(T(x)) for the
GLCM term of the ``assimilation`` recipe and for pictures.

Registered as ``build_model("assimilation", spatial_dims, in_channels, out_channels,
backbone="resnet18", backbone_weights="natural/model.json")``. ``backbone_weights`` (any
file :func:`~medrobust.models.pretrained.load_pretrained` reads; the name ``pretrained`` is
reserved by the registry, which refuses downloads) only initialises B. When it is a
medrobust checkpoint, ``backbone`` and ``backbone_kwargs`` left at None are taken from it
(so the network fits the weights). The recorded spec holds the backbone actually built and
leaves the path out: the trained weights live in the run's checkpoint, which then loads
where the pretrained file is gone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.layers import Conv
from torch import nn

from medrobust.models.checkpoint import HEADER_NAME, read_checkpoint_info
from medrobust.models.pretrained import LoadReport, load_pretrained
from medrobust.models.registry import build_model, register_model


class TextureModule(nn.Module):
    """T: ``x + head(body(x))``, ``(B, C, *spatial)`` -> same shape; identity at initialisation.

    Args:
        spatial_dims: 2 or 3. channels: C. width: feature channels. blocks: MONAI residual units.

    Shape:
        - input and output: ``(B, C, *spatial)``, model units.

    Example:
        >>> import torch
        >>> texture = TextureModule(spatial_dims=2, channels=1)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> bool(torch.equal(texture(x), x))              # identity until trained
        True
    """

    def __init__(self, spatial_dims: int = 2, channels: int = 1, width: int = 16, blocks: int = 2) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.body = nn.Sequential(conv(channels, width, 3, padding=1), nn.PReLU(),
                                  *[ResidualUnit(spatial_dims, width, width) for _ in range(blocks)])
        self.head = conv(width, channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + head(body(x))``: the texture-adapted image ``(B, C, *spatial)``.

        Args:
            x: images ``(B, C, *spatial)``.

        Returns:
            Images of the same shape.

        Example:
            >>> import torch
            >>> TextureModule(spatial_dims=3, channels=2)(torch.rand(1, 2, 8, 8, 8)).shape
            torch.Size([1, 2, 8, 8, 8])
        """
        return x + self.head(self.body(x))


class ColourModule(nn.Module):
    """C: ``(B, C, *spatial)`` -> ``(B, 3, *spatial)`` in [0, 1]: ``sigmoid(gain·mean_c(z) + net(z))``.

    ``z`` is the image standardised per sample (mean 0, std 1 over all its voxels), ``net``
    a learned per-pixel colour map (1x1 convolutions) whose last layer starts at zero. So C
    starts as the grey image at the contrast of a natural photograph (gain 1.7: one standard
    deviation maps to 0.15..0.85) whatever the model units, and learns colours from there.
    (A randomly initialised colour map squeezed the image into a narrow grey band.)

    Args:
        spatial_dims: 2 or 3. in_channels: C. width: hidden channels of the colour map.
        gain: contrast of the initial grey image (default 1.7).

    Shape:
        - input: ``(B, C, *spatial)``, any units; output: ``(B, 3, *spatial)`` in [0, 1].

    Example:
        >>> import torch
        >>> colour = ColourModule(spatial_dims=2, in_channels=1)
        >>> rgb = colour(torch.rand(2, 1, 16, 16) * 1000)     # units do not matter
        >>> rgb.shape, bool((rgb[:, 0] == rgb[:, 2]).all())  # grey at initialisation
        (torch.Size([2, 3, 16, 16]), True)
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 16, gain: float = 1.7) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.gain = gain
        first, middle, last = conv(in_channels, width, 1), conv(width, width, 1), conv(width, 3, 1)
        self.net = nn.Sequential(first, nn.PReLU(), middle, nn.PReLU(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The colour image ``sigmoid(gain · mean_c(z) + net(z))`` of the standardised image z.

        Args:
            x: images ``(B, C, *spatial)``.

        Returns:
            ``(B, 3, *spatial)`` in [0, 1].

        Example:
            >>> import torch
            >>> rgb = ColourModule(spatial_dims=2, in_channels=1)(torch.rand(2, 1, 16, 16))
            >>> bool(((rgb >= 0) & (rgb <= 1)).all())
            True
        """
        flat = x.flatten(1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        z = (x - flat.mean(1).view(shape)) / flat.std(1).clamp_min(1e-6).view(shape)
        return torch.sigmoid(self.gain * z.mean(1, keepdim=True) + self.net(z))


class DomainAssimilation(nn.Module):
    """F(B(C(T(x)))): ``(B, C, *spatial)`` -> logits ``(B, K)`` (or whatever the backbone gives).

    Usually built with ``build_model("assimilation", ...)`` (see :func:`build_assimilation`).

    Args:
        texture: T, image -> image of the same shape.
        colour: C, image -> ``(B, 3, *spatial)`` in [0, 1].
        backbone: B and F, a classifier with 3 input channels.

    Attributes:
        texture, colour, backbone: T, C and B+F.
        pretrained_report: what loading ``backbone_weights`` did (None without it).
        built_backbone: (registry name, kwargs) of B when built by the registry, else None.

    Shape:
        - input: ``(B, C, *spatial)`` model units; output: the backbone's logits, ``(B, K)``.

    Example:
        >>> import torch
        >>> backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
        >>> model = DomainAssimilation(TextureModule(2, 1), ColourModule(2, 1), backbone)
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 2])
    """

    def __init__(self, texture: nn.Module, colour: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.texture, self.colour, self.backbone = texture, colour, backbone
        self.pretrained_report: LoadReport | None = None
        self.built_backbone: tuple[str, dict[str, Any]] | None = None

    def assimilate(self, x: torch.Tensor) -> torch.Tensor:
        """C(T(x)): the colour image ``(B, 3, *spatial)`` in [0, 1] the backbone sees.

        Args:
            x: images ``(B, C, *spatial)``, model units.

        Returns:
            ``(B, 3, *spatial)`` in [0, 1] (differentiable in ``x``).

        Example:
            >>> import torch
            >>> model = DomainAssimilation(TextureModule(2, 1), ColourModule(2, 1), torch.nn.Identity())
            >>> model.assimilate(torch.rand(2, 1, 8, 8)).shape
            torch.Size([2, 3, 8, 8])
        """
        return self.colour(self.texture(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the backbone on C(T(x)).

        Args:
            x: images ``(B, C, *spatial)``, model units.

        Returns:
            The backbone's logits, ``(B, K)`` for a classifier.

        Example:
            >>> import torch
            >>> head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
            >>> DomainAssimilation(TextureModule(2, 1), ColourModule(2, 1), head)(torch.rand(1, 1, 8, 8)).shape
            torch.Size([1, 2])
        """
        return self.backbone(self.assimilate(x))

    @property
    def medrobust_spec(self) -> dict[str, Any]:
        """The registry spec (architecture, kwargs) with the backbone as built, no weights path.

        ``build_model`` sets it; the setter drops ``backbone_weights`` and records
        ``backbone``/``backbone_kwargs`` from :attr:`built_backbone`.

        Example:
            >>> from medrobust.models.registry import build_model
            >>> build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2).medrobust_spec["kwargs"]
            {'spatial_dims': 2, 'in_channels': 1, 'out_channels': 2, 'backbone': 'resnet18', 'backbone_kwargs': {}}
        """
        return self._spec

    @medrobust_spec.setter
    def medrobust_spec(self, spec: dict[str, Any]) -> None:
        # build_model sets the spec after building: record the backbone as built, not the file.
        kwargs = {k: v for k, v in spec["kwargs"].items() if k != "backbone_weights"}
        built = getattr(self, "built_backbone", None)
        if built is not None:
            kwargs["backbone"], kwargs["backbone_kwargs"] = built
        self._spec = {**spec, "kwargs": kwargs}


@register_model("assimilation")
def build_assimilation(spatial_dims: int, in_channels: int, out_channels: int, *, backbone: str | None = None,
                       backbone_kwargs: dict[str, Any] | None = None, backbone_weights: str | None = None,
                       texture_width: int = 16, texture_blocks: int = 2, colour_width: int = 16) -> nn.Module:
    """Builder behind ``build_model("assimilation", ...)``.

    Args:
        backbone: registry classifier name (resnet18/34/50, densenet121, efficientnet-b0, ...),
            built with ``in_channels=3`` and ``out_channels``. None: that of the
            ``backbone_weights`` checkpoint, else "resnet18".
        backbone_kwargs: the backbone's extra kwargs; None: those of the checkpoint, else {}.
        backbone_weights: pretrained weights for the backbone (head refitted when K differs).
        texture_width: channels of the texture module T.
        texture_blocks: residual blocks of T.
        colour_width: hidden channels of the colour module C.
        spatial_dims: 2 or 3, as ``build_model``.
        in_channels: channels of the input images.
        out_channels: K, the number of classes.

    Returns:
        A :class:`DomainAssimilation`.

    Raises:
        ValueError: unknown or composite backbone, bad sizes, weights that do not fit.

    Shape:
        - input: ``(B, in_channels, *spatial)``; output: ``(B, out_channels)``.

    Example:
        >>> import torch
        >>> from medrobust.models.registry import build_model
        >>> model = build_model("assimilation", spatial_dims=2, in_channels=1, out_channels=2).eval()
        >>> model(torch.rand(2, 1, 32, 32)).shape, model.built_backbone
        (torch.Size([2, 2]), ('resnet18', {}))
    """
    recorded = _checkpoint_backbone(backbone_weights)
    name = backbone or (recorded[0] if recorded else "resnet18")
    if backbone_kwargs is None:
        backbone_kwargs = recorded[1] if recorded and recorded[0] == name else {}
    if name == "assimilation":
        raise ValueError("backbone: 'assimilation' cannot be its own backbone; use a classifier such as resnet18")
    if texture_width < 1 or texture_blocks < 0 or colour_width < 1:
        raise ValueError(f"texture_width/colour_width must be >= 1 and texture_blocks >= 0, got "
                         f"{texture_width}, {colour_width}, {texture_blocks}")
    net = build_model(name, spatial_dims=spatial_dims, in_channels=3, out_channels=out_channels, **backbone_kwargs)
    model = DomainAssimilation(TextureModule(spatial_dims, in_channels, texture_width, texture_blocks),
                               ColourModule(spatial_dims, in_channels, colour_width), net)
    model.built_backbone = (name, dict(backbone_kwargs))
    if backbone_weights:
        model.pretrained_report = load_pretrained(net, backbone_weights)
    return model


def _checkpoint_backbone(path: str | None) -> tuple[str, dict[str, Any]] | None:
    """(architecture, extra kwargs) of a medrobust checkpoint at ``path``; None for other files."""
    if not path or not (Path(path).suffix == ".json" or (Path(path) / HEADER_NAME).is_file()):
        return None
    info = read_checkpoint_info(path)
    dims = ("spatial_dims", "in_channels", "out_channels")
    return info.architecture, {k: v for k, v in info.kwargs.items() if k not in dims}
