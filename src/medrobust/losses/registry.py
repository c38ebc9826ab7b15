"""The losses by name: ``LOSS_NAMES``, ``STEP_DEPENDENT`` and ``get_loss`` (with the targeted forms)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from medrobust.losses.base import LossFn
from medrobust.losses.margin import dlr, margin
from medrobust.losses.objectives import ce, cosine_distance, dice, dice_ce
from medrobust.losses.weighted import cospgd, cospgd_targeted, segpgd, segpgd_targeted
from medrobust.registry import Registry

_LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss", {
    "ce": ce, "dice": dice, "dice_ce": dice_ce, "segpgd": segpgd, "cospgd": cospgd, "dlr": dlr, "margin": margin,
    "cosine": cosine_distance,
})
LOSS_NAMES: tuple[str, ...] = _LOSSES.names()  # a closed set: nothing registers losses later
STEP_DEPENDENT: frozenset[str] = frozenset({"segpgd"})
# Losses whose targeted form is not the untargeted one minimised (their voxel weights depend
# on whether a voxel is at the label: for a target, "at the target" plays that part).
_TARGETED: dict[str, Callable[..., torch.Tensor]] = {"segpgd": segpgd_targeted, "cospgd": cospgd_targeted}


def get_loss(name: str, *, targeted: bool = False) -> LossFn:
    """The per-sample loss called ``name`` (one of ``LOSS_NAMES``).

    Args:
        name: a loss name, e.g. "ce", "dice", "dice_ce", "segpgd", "cospgd", "dlr", "margin".
        targeted: the form a targeted attack minimises (``y`` = the target): SegPGD and
            CosPGD have their own (:func:`segpgd_targeted`, :func:`cospgd_targeted`); the
            other losses are the same function.

    Returns:
        The loss function, with the :class:`LossFn` signature.

    Raises:
        ValueError: ``name`` is not a known loss (the message lists the allowed names).

    Example:
        >>> import torch
        >>> from medrobust.losses import get_loss
        >>> loss = get_loss("margin")
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])).tolist()
        [-2.0, 1.0]
        >>> get_loss("l1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: unknown loss 'l1'; allowed: ...
    """
    loss = _LOSSES[name]  # ValueError listing the allowed names
    return _TARGETED.get(name, loss) if targeted else loss
