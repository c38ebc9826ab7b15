"""Cooperative FTN + STN segmenter (seed 003, Chen et al. MICCAI 2021) as one ``nn.Module``.

FTN (fast-thinking network), no skip connections, so everything the decoders use passes
through the latent codes that the cooperative recipe masks:

    x (B, C, *S) --encode--> z_i (B, c_L, *S/f) --decouple--> z_s (B, c_L, *S/f)
    z_i --decode_image--> reconstruction (B, C, *S)      z_s --decode_seg--> logits (B, K, *S)

STN (slow-thinking network): a denoising autoencoder on soft segmentations,
``refine(logits) = STN(softmax(logits / T))`` -> corrected logits (B, K, *S), T = 2.

``forward(x)`` = FTN then one STN refinement of the FTN prediction, so attacks, corruptions
and metrics see the whole pipeline. f = 2**len(channels); inputs whose sides are not
multiples of f are padded (replicate) before the networks and the output cropped back.
MONAI has no latent-code encoder/decoder without skips, so they are stacked here from its
``Convolution`` blocks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from medrobust.models.registry import register_model

NORMS = ("batch", "instance")
_ACT = ("leakyrelu", {"negative_slope": 0.2})


def _conv(dims: int, cin: int, cout: int, norm: str, stride: int = 1, up: bool = False) -> nn.Module:
    return Convolution(dims, cin, cout, strides=stride, kernel_size=3, act=_ACT, norm=norm, is_transposed=up)


class Encoder(nn.Sequential):
    """Latent-code encoder: per width a stride-2 conv and a conv (MONAI ``Convolution`` blocks).

    No full-resolution conv (as MONAI's UNet), which keeps 3D volumes cheap on CPU.

    Args:
        dims: spatial dims, 2 or 3.
        cin: input channels.
        channels: widths, one stride-2 level each.
        norm: "batch" or "instance".

    Shape:
        - input: ``(B, cin, *S)``, S multiples of f = 2**len(channels).
        - output: ``(B, channels[-1], *S/f)``.

    Example:
        >>> import torch
        >>> Encoder(2, 1, (4, 8), "batch")(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, dims: int, cin: int, channels: Sequence[int], norm: str) -> None:
        layers: list[nn.Module] = []
        for a, b in zip([cin, *channels[:-1]], channels):
            layers += [_conv(dims, a, b, norm, stride=2), _conv(dims, b, b, norm)]
        super().__init__(*layers)


class Decoder(nn.Sequential):
    """Latent-code decoder, the mirror of :class:`Encoder`.

    Per width a conv and a stride-2 transposed conv to the next width; the last one is
    linear (logits or image intensities).

    Args:
        dims: spatial dims, 2 or 3.
        cout: output channels (classes K or image channels C).
        channels: the encoder's widths (decoded in reverse).
        norm: "batch" or "instance".

    Shape:
        - input: ``(B, channels[-1], *S/f)``; output: ``(B, cout, *S)``, f = 2**len(channels).

    Example:
        >>> import torch
        >>> Decoder(2, 3, (4, 8), "batch")(torch.rand(2, 8, 4, 4)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, dims: int, cout: int, channels: Sequence[int], norm: str) -> None:
        rev = list(channels)[::-1]
        layers: list[nn.Module] = []
        for a, b in zip(rev, rev[1:]):
            layers += [_conv(dims, a, a, norm), _conv(dims, a, b, norm, stride=2, up=True)]
        layers += [_conv(dims, rev[-1], rev[-1], norm),
                   Convolution(dims, rev[-1], cout, strides=2, kernel_size=3, is_transposed=True, conv_only=True)]
        super().__init__(*layers)


class CooperativeNet(nn.Module):
    """FTN (image encoder, decoupler, image decoder, segmentation decoder) + STN.

    Args:
        spatial_dims: 2 or 3. in_channels: image channels C. out_channels: classes K.
        channels: encoder widths, one stride-2 level each (decoders mirror them); the latent
            codes have ``channels[-1]`` channels at 1/2**len(channels) of the input size.
            Default (16, 32): codes at 1/4. Measured on the 3.5 mm MNI demo (8 epochs,
            masking off): (8, 16, 32), codes at 1/8, reached validation Dice 0.27 and its STN
            lowered the FTN's white-matter Dice from 0.46 to 0.16; (16, 32) reached 0.33.
        stn_channels: widths of the STN autoencoder (default: ``channels``).
        norm: "batch" (the seed's) or "instance".
        temperature: T of the STN input softmax(logits / T), > 0.
        image_sigmoid: end the image decoder with a sigmoid, as the seed's
            (``last_act=nn.Sigmoid()``; default True). It suits images in [0, 1] (min-max or
            a CT window, the seed's ACDC data); for z-scored data set it False (a linear last
            layer), since the reconstruction must reach values outside (0, 1).

    Raises:
        ValueError: empty or non-positive widths, an unknown ``norm``, ``temperature`` <= 0
            or ``out_channels`` < 2.

    Shape:
        - input: ``(B, C, *S)`` model units, any sizes (padded to multiples of ``factor``).
        - output: refined logits ``(B, K, *S)``.

    Example:
        >>> import torch
        >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8))
        >>> net.factor
        4
        >>> net.eval()(torch.rand(2, 1, 10, 10)).shape
        torch.Size([2, 3, 10, 10])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 channels: Sequence[int] = (16, 32), stn_channels: Sequence[int] | None = None,
                 norm: str = "batch", temperature: float = 2.0, image_sigmoid: bool = True) -> None:
        super().__init__()
        stn_channels = list(channels if stn_channels is None else stn_channels)
        for name, widths in (("channels", channels), ("stn_channels", stn_channels)):
            if len(widths) < 1 or min(int(c) for c in widths) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive widths, got {list(widths)}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (segmentation classes), got {out_channels}")
        d, latent = spatial_dims, int(channels[-1])
        self.spatial_dims, self.num_classes, self.temperature = d, out_channels, float(temperature)
        self.image_sigmoid = bool(image_sigmoid)
        self.factor = 2 ** max(len(channels), len(stn_channels))
        self.image_encoder = Encoder(d, in_channels, channels, norm)
        self.decoupler = nn.Sequential(_conv(d, latent, latent, norm), _conv(d, latent, latent, norm))
        self.image_decoder = Decoder(d, in_channels, channels, norm)
        self.segmentation_decoder = Decoder(d, out_channels, channels, norm)
        self.shape_encoder = Encoder(d, out_channels, stn_channels, norm)
        self.shape_decoder = Decoder(d, out_channels, stn_channels, norm)

    # --- FTN -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, *S), S multiples of ``factor`` -> latent image code z_i (B, c_L, *S/f).

        Args:
            x: images ``(B, C, *S)``, padded with :meth:`pad`.

        Returns:
            z_i ``(B, channels[-1], *S/factor)``.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.encode(torch.rand(2, 1, 12, 12)).shape
            torch.Size([2, 8, 3, 3])
        """
        return self.image_encoder(x)

    def decouple(self, z_i: torch.Tensor) -> torch.Tensor:
        """z_i -> shape code z_s (same shape).

        Args:
            z_i: image code ``(B, c_L, *S/f)``.

        Returns:
            z_s ``(B, c_L, *S/f)``.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.decouple(torch.rand(2, 8, 3, 3)).shape
            torch.Size([2, 8, 3, 3])
        """
        return self.decoupler(z_i)

    def decode_image(self, z_i: torch.Tensor) -> torch.Tensor:
        """z_i -> reconstructed image (B, C, *S), model units.

        Args:
            z_i: image code ``(B, c_L, *S/f)``.

        Returns:
            The reconstruction ``(B, C, *S)``, in (0, 1) with ``image_sigmoid``.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.decode_image(torch.rand(2, 8, 3, 3)).shape
            torch.Size([2, 1, 12, 12])
        """
        out = self.image_decoder(z_i)
        return torch.sigmoid(out) if self.image_sigmoid else out

    def decode_seg(self, z_s: torch.Tensor) -> torch.Tensor:
        """z_s -> FTN segmentation logits (B, K, *S).

        Args:
            z_s: shape code ``(B, c_L, *S/f)``.

        Returns:
            FTN logits ``(B, K, *S)`` (before the STN).

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.decode_seg(torch.rand(2, 8, 3, 3)).shape
            torch.Size([2, 3, 12, 12])
        """
        return self.segmentation_decoder(z_s)

    # --- STN -------------------------------------------------------------------------
    def shape_correct(self, probs: torch.Tensor) -> torch.Tensor:
        """Soft or one-hot segmentation (B, K, *S), values in [0, 1] -> corrected logits (B, K, *S).

        Args:
            probs: class probabilities ``(B, K, *S)``, S multiples of ``factor``.

        Returns:
            Corrected logits ``(B, K, *S)``.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> probs = torch.softmax(torch.rand(2, 3, 12, 12), dim=1)
            >>> net.shape_correct(probs).shape
            torch.Size([2, 3, 12, 12])
        """
        return self.shape_decoder(self.shape_encoder(probs))

    def refine(self, logits: torch.Tensor) -> torch.Tensor:
        """STN refinement of logits (B, K, *S): STN(softmax(logits / T)) -> logits (B, K, *S).

        Args:
            logits: segmentation logits ``(B, K, *S)``, S multiples of ``factor``.

        Returns:
            Refined logits ``(B, K, *S)``.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.refine(torch.randn(2, 3, 12, 12)).shape
            torch.Size([2, 3, 12, 12])
        """
        return self.shape_correct(F.softmax(logits / self.temperature, dim=1))

    # --- whole pipeline --------------------------------------------------------------
    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """Pad the spatial sides of (B, *, *S) at the end to multiples of ``factor`` (replicate).

        Integer tensors (labels) are padded through float and cast back.

        Args:
            t: images ``(B, C, *S)``, logits or labels ``(B, 1, *S)``.

        Returns:
            ``t`` itself when already a multiple, else ``(B, *, *S')`` with S' rounded up
            to multiples of ``factor``, dtype kept.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net.pad(torch.zeros(2, 1, 10, 12, dtype=torch.long)).shape
            torch.Size([2, 1, 12, 12])
        """
        extra = [(-s) % self.factor for s in t.shape[2:]]
        if not any(extra):
            return t
        widths = [w for e in reversed(extra) for w in (0, e)]
        if t.is_floating_point():
            return F.pad(t, widths, mode="replicate")
        return F.pad(t.float(), widths, mode="replicate").to(t.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, *S) in model units -> refined logits (B, K, *S): FTN, then STN on its prediction.

        Args:
            x: images ``(B, C, *S)``, any sizes.

        Returns:
            Refined logits ``(B, K, *S)``, cropped back to ``x``'s size.

        Example:
            >>> import torch
            >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8)).eval()
            >>> net(torch.rand(2, 1, 10, 10)).shape
            torch.Size([2, 3, 10, 10])
        """
        size = x.shape[2:]
        logits = self.refine(self.decode_seg(self.decouple(self.encode(self.pad(x)))))
        crop = tuple(slice(0, s) for s in size)
        return logits[(slice(None),) * (logits.ndim - len(crop)) + crop]


def unwrap_cooperative(model: nn.Module) -> CooperativeNet | None:
    """The CooperativeNet inside ``model`` (itself, or under ``.model``/``.module`` wrappers), else None.

    Args:
        model: a CooperativeNet, or a wrapper such as SlidingWindow or DDP around one.

    Returns:
        The inner CooperativeNet, or None when there is none.

    Example:
        >>> import torch
        >>> from medrobust.models.wrappers import SlidingWindow
        >>> net = CooperativeNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8))
        >>> unwrap_cooperative(SlidingWindow(net, roi_size=(16, 16))) is net
        True
        >>> unwrap_cooperative(torch.nn.Conv2d(1, 3, 3)) is None
        True
    """
    while not isinstance(model, CooperativeNet):
        inner = getattr(model, "model", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return None
        model = inner
    return model


@register_model("cooperative")
def _cooperative(spatial_dims: int, in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
    return CooperativeNet(spatial_dims, in_channels, out_channels, **kw)
