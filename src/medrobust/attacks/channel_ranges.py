"""Budgets per (sample, channel): attack multi-channel z-scored data in each channel's own range.

A z-scored MR study with FLAIR, T1, T1c and T2 channels has one intensity range per
channel. Taken over the whole sample, the valid range and a budget stated in "1/255" of it
give a narrow channel a radius several times its own range's 1/255; SEAT (seed 001) takes
both per (sample, channel). :class:`ChannelRanges` does the same by a change of variables,
so that every attack, unchanged, runs in it::

    u = (x - low[b, c]) / (high[b, c] - low[b, c])        (each channel spans [0, 1])

The attack sees ``u`` with the valid range [0, 1] and the model ``x = low + u * width``
(:meth:`ChannelRanges.model`), so an L∞ budget of ``eps/255`` in ``u`` is exactly SEAT's
``eps/255`` of each channel's own range, and the range clip is per channel. An L2 budget in
``u`` weighs each channel by the inverse of its width (L2 in units of each channel's
range). The change applies only to budgets stated in "1/255" — the one unit defined by the
range; budgets in model, raw or HU units keep their meaning and the per-sample range.

No library offers this change of variables for an attack (torchattacks and ART clip to one
scalar range), hence this module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medrobust.units import IntensityMap


def wants_channel_ranges(setting: bool | None, x: torch.Tensor, intensity: IntensityMap | None, unit: str) -> bool:
    """Whether a budget runs in per-(sample, channel) ranges.

    Args:
        setting: True or False forces it (True still needs a "1/255" budget and no clip
            window); None (auto) turns it on for multi-channel z-scored data.
        x: the batch ``(B, C, *spatial)`` in model units.
        intensity: the data's IntensityMap (a clip window fixes the range: then never).
        unit: the budget's unit; only "1/255" is defined by the range.

    Returns:
        True when the attack should run in :class:`ChannelRanges` coordinates.

    Example:
        >>> import torch
        >>> z = IntensityMap.z_score(0.0, 1.0)
        >>> wants_channel_ranges(None, torch.zeros(1, 4, 8, 8), z, "1/255")
        True
        >>> wants_channel_ranges(None, torch.zeros(1, 1, 8, 8), z, "1/255"), wants_channel_ranges(None, torch.zeros(1, 4, 8, 8), z, "model")
        (False, False)
        >>> wants_channel_ranges(False, torch.zeros(1, 4, 8, 8), z, "1/255")
        False
    """
    if unit != "1/255" or (intensity is not None and intensity.clip is not None):
        return False
    return x.shape[1] > 1 if setting is None else bool(setting)


@dataclass(frozen=True)
class ChannelRanges:
    """The per-(sample, channel) intensity ranges of a batch and the change of variables they define.

    Attributes:
        low: each channel's minimum, ``(B, C, 1, ..., 1)``.
        width: its maximum minus its minimum (at least 1e-6), same shape.

    Shape:
        - low, width: ``(B, C, 1, ..., 1)`` with the batch's number of dimensions.

    Example:
        >>> import torch
        >>> x = torch.stack([torch.linspace(-1, 1, 16), torch.linspace(0, 8, 16)]).reshape(1, 2, 4, 4)
        >>> ranges = ChannelRanges.of(x)
        >>> u = ranges.to_unit(x)
        >>> [round(float(v), 3) for v in u.amin((2, 3))[0]], [round(float(v), 3) for v in u.amax((2, 3))[0]]
        ([0.0, 0.0], [1.0, 1.0])
        >>> bool(torch.allclose(ranges.from_unit(u), x, atol=1e-6))
        True
    """

    low: torch.Tensor
    width: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> ChannelRanges:
        """The ranges of ``x`` ``(B, C, *spatial)``, one per sample and channel.

        Args:
            x: the clean batch in model units.

        Returns:
            Its :class:`ChannelRanges` (a constant channel gets width 1e-6).
        """
        flat = x.detach().reshape(x.shape[0], x.shape[1], -1)
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        low = flat.amin(dim=2)
        return cls(low.reshape(shape), (flat.amax(dim=2) - low).clamp_min(1e-6).reshape(shape))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - low) / width``: each channel of each sample spans [0, 1].

        Args:
            x: a batch in model units ``(B, C, *spatial)``.

        Returns:
            The batch in unit coordinates, same shape.
        """
        return (x - self.low) / self.width

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """``low + u * width`` (differentiable in ``u``; :meth:`restore` also clips to the range).

        Args:
            u: a batch in unit coordinates ``(B, C, *spatial)``.

        Returns:
            The batch in model units, same shape.
        """
        return self.low + u * self.width

    def restore(self, x: torch.Tensor, u: torch.Tensor, u_adv: torch.Tensor) -> torch.Tensor:
        """An attack's result back in model units, in each channel's range; voxels the attack left alone keep ``x`` exactly.

        Args:
            x: the clean batch in model units.
            u: ``to_unit(x)``, the clean batch the attack saw.
            u_adv: the attack's result in unit coordinates.

        Returns:
            The adversarial batch in model units.

        Example:
            >>> import torch
            >>> _ = torch.manual_seed(0)
            >>> x = torch.randn(1, 2, 8, 8)
            >>> ranges = ChannelRanges.of(x)
            >>> u = ranges.to_unit(x)
            >>> u_adv = u.clone(); u_adv[..., :4] += 0.01
            >>> out = ranges.restore(x, u, u_adv)
            >>> bool(torch.equal(out[..., 4:], x[..., 4:])), bool((out[..., :4] != x[..., :4]).any())
            (True, True)
        """
        inside = torch.minimum(torch.maximum(self.from_unit(u_adv), self.low), self.low + self.width)
        return torch.where(u_adv == u, x, inside)

    def model(self, model: nn.Module) -> nn.Module:
        """The network seen from unit coordinates: it takes ``u`` and runs on ``low + u * width``.

        Args:
            model: any module taking the batch in model units.

        Returns:
            A module taking the batch in unit coordinates.
        """
        return _FromUnit(model, self)


class _FromUnit(nn.Module):
    """``u ↦ model(ranges.from_unit(u))``."""

    def __init__(self, model: nn.Module, ranges: ChannelRanges) -> None:
        super().__init__()
        self.inner, self.ranges = model, ranges

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.inner(self.ranges.from_unit(u))


def channel_ranges_for(setting: bool | None, x: torch.Tensor, intensity: IntensityMap | None,
                       unit: str) -> ChannelRanges | None:
    """The batch's :class:`ChannelRanges` when :func:`wants_channel_ranges` says so, else None.

    Args:
        setting: True, False, or None (auto: multi-channel z-scored data).
        x: the batch ``(B, C, *spatial)`` in model units.
        intensity: the data's IntensityMap.
        unit: the budget's unit.

    Returns:
        The ranges, or None when the budget keeps one range per sample.

    Example:
        >>> import torch
        >>> channel_ranges_for(None, torch.rand(2, 3, 4, 4), None, "1/255").width.shape
        torch.Size([2, 3, 1, 1])
    """
    return ChannelRanges.of(x) if wants_channel_ranges(setting, x, intensity, unit) else None


def attack_batch(attack_at: Callable[[torch.Tensor], Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]],
                 model: nn.Module, x: torch.Tensor, y: torch.Tensor, ranges: ChannelRanges | None) -> torch.Tensor:
    """Run an attack in per-channel ranges (or as is when ``ranges`` is None); the result in model units.

    Args:
        attack_at: builds the attack for the batch it will see (``x``, or its unit
            coordinates, whose valid range is [0, 1]); its budget comes from that batch.
        model: the model, taking model units.
        x: the clean batch ``(B, C, *spatial)``.
        y: labels or targets.
        ranges: :func:`channel_ranges_for` of the batch.

    Returns:
        The adversarial batch in model units, inside each channel's range.

    Example:
        >>> import torch
        >>> from medrobust.attacks import PGD
        >>> from medrobust.units import budget_for_case
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(1, 2, 8, 8) * torch.tensor([1.0, 0.1]).view(1, 2, 1, 1)  # a narrow channel
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 3))
        >>> def attack_at(b):
        ...     return PGD(budget_for_case("linf", 8, "1/255", b, None), steps=3, seed=0)
        >>> ranges = ChannelRanges.of(x)
        >>> x_adv = attack_batch(attack_at, model, x, torch.tensor([0]), ranges)
        >>> per_channel = (x_adv - x).abs().amax((2, 3)) / ranges.width.reshape(1, 2)
        >>> bool((per_channel <= 8 / 255 + 1e-5).all())
        True
    """
    if ranges is None:
        return attack_at(x)(model, x, y)
    u = ranges.to_unit(x)
    return ranges.restore(x, u, attack_at(u)(ranges.model(model), u, y))
