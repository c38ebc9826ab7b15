"""Latent-code masking (seed 003): random channel dropout and targeted channel/spatial masks.

A code z is (B, C, *S'). A mask m has the shape of z with size 1 on the axes it does not
select: (B, C, 1, ..) for channel schemes, (B, 1, *S') for the spatial one. Selected entries
are multiplied by U[0, 0.5) (soft) or 0 (hard), the others by 1; z_masked = z * m.

Targeted schemes rank entries by the gradient g = dL/dz of a task loss L of the decoded
code (MSE reconstruction for z_i, CE segmentation for z_s), averaged over the axes not
selected, and mask the top k = int(N * p) of N channels or positions:

- ``"published"``: score = g (the seed's code). Its L is a loss the networks minimise, so
  zeroing an entry with large positive g and z >= 0 changes L by about -g*z <= 0: to first
  order it makes the sample easier.
- ``"loss_increasing"``: score = -g*z, the first-order increase of L when the entry is
  zeroed (soft masks scale that by 1 - a > 0.5, the ranking is the same).

Random dropout selects each channel with probability p. Two forms:

- ``rescale=True``: the seed's ``F.dropout2d(z, p)``: selected channels are zeroed (``soft``
  does not apply) and the kept ones multiplied by 1/(1-p), so the code's expected value stays.
- ``rescale=False``: selected channels are multiplied by U[0, 0.5) (soft) or 0 (hard) and the
  kept ones left as they are: masking only removes information, like the targeted schemes.

:func:`mask_code` and :func:`random_channel_mask` default to ``rescale=False``; the
cooperative recipe defaults to the seed's form (its ``dropout_rescale=True``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

SCHEMES = ("random", "channel", "spatial")
CONVENTIONS = ("published", "loss_increasing")
SOFT_MAX = 0.5  # soft masks multiply selected entries by U[0, SOFT_MAX)


def check_fraction(value: float, name: str) -> float:
    """``value`` as a float in [0, 1]; ValueError naming ``name`` otherwise."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    """``value`` if it is one of ``allowed``; ValueError naming ``name`` and the choices otherwise."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return value


@contextmanager
def frozen_norm_stats(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as it is but keep every norm layer's running statistics.

    Batch statistics are used in train mode, for passes that are not training steps.

    The layers update throw-away copies of their buffers, which are swapped back on exit;
    the originals are never written (an in-place restore would bump their autograd version
    and break the backward of an earlier pass that saved them).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [{k: b for k, b in m.named_buffers(recurse=False)} for m in norms]
    for m, state in zip(norms, saved):
        for k, b in state.items():
            setattr(m, k, b.clone())
    try:
        yield
    finally:
        for m, state in zip(norms, saved):
            for k, b in state.items():
                setattr(m, k, b)


def code_gradient(code: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor],
                  loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """dL/dz at the detached ``code`` for L = loss(decode(z)) (scalar); shape of ``code``.

    Only the code's gradient is computed (``torch.autograd.grad``), so no parameter's
    ``.grad`` is touched: the decoder stays frozen.
    """
    z = code.detach().requires_grad_(True)
    with torch.enable_grad():
        value = loss(decode(z))
    return torch.autograd.grad(value, z)[0]


def _factors(selected: torch.Tensor, soft: bool) -> torch.Tensor:
    """1 where not selected; U[0, 0.5) (soft) or 0 (hard) where selected. Float, shape of ``selected``."""
    if soft:
        scale = SOFT_MAX * torch.rand(selected.shape, device=selected.device)
    else:
        scale = torch.zeros(selected.shape, device=selected.device)
    return torch.where(selected, scale, torch.ones_like(scale))


def top_fraction(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean (B, N): the k = int(N * p) highest scores of each row of ``scores`` (B, N)."""
    k = int(scores.shape[1] * check_fraction(p, "p"))
    selected = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if k > 0:
        selected.scatter_(1, scores.topk(k, dim=1).indices, True)
    return selected


def _scores(code: torch.Tensor, grad: torch.Tensor, convention: str) -> torch.Tensor:
    check_choice(convention, CONVENTIONS, "convention")
    return grad if convention == "published" else -grad * code.detach()


def random_channel_mask(code: torch.Tensor, p: float, soft: bool = True, rescale: bool = False) -> torch.Tensor:
    """Channel dropout: each channel of each sample selected with probability p.

    Args:
        code: latent code ``(B, C, *S')``.
        p: the dropout probability, in [0, 1].
        soft: without ``rescale``, selected channels times U[0, 0.5) (True) or 0 (False).
        rescale: the seed's ``F.dropout2d``: selected channels 0, kept ones times 1/(1-p).

    Returns:
        The mask ``(B, C, 1, ..)`` in ``code``'s dtype.
    """
    p = check_fraction(p, "p")
    shape = code.shape[:2] + (1,) * (code.ndim - 2)
    if rescale:  # dropout of a ones tensor of the channel shape draws as F.dropout2d does on the code
        return F.dropout(torch.ones(shape, device=code.device, dtype=code.dtype), p, training=True)
    return _factors(torch.rand(shape, device=code.device) < p, soft).to(code.dtype)


def channel_mask(code: torch.Tensor, grad: torch.Tensor, p: float, convention: str = "loss_increasing",
                 soft: bool = True) -> torch.Tensor:
    """Targeted channel-wise mask (B, C, 1, ..): top int(C*p) channels by spatially averaged score."""
    b, c = code.shape[:2]
    scores = _scores(code, grad, convention).reshape(b, c, -1).mean(2)
    selected = top_fraction(scores, p).reshape(b, c, *(1,) * (code.ndim - 2))
    return _factors(selected, soft).to(code.dtype)


def spatial_mask(code: torch.Tensor, grad: torch.Tensor, p: float, convention: str = "loss_increasing",
                 soft: bool = True) -> torch.Tensor:
    """Targeted spatial-wise mask (B, 1, *S'): top int(|S'|*p) positions by channel-averaged score."""
    b = code.shape[0]
    scores = _scores(code, grad, convention).mean(1).reshape(b, -1)
    selected = top_fraction(scores, p).reshape(b, 1, *code.shape[2:])
    return _factors(selected, soft).to(code.dtype)


def mask_code(code: torch.Tensor, scheme: str, p: float, *, convention: str = "loss_increasing",
              soft: bool = True, rescale: bool = False, decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
              loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a latent code with one scheme.

    Args:
        code: (B, C, *S') latent code (z_i or z_s).
        scheme: "random" (channel dropout with probability p), "channel" or "spatial"
            (targeted; need ``decode`` and ``loss``: the task loss L = loss(decode(z))).
        p: dropout probability, or the fraction of channels/positions to mask, in [0, 1].
        convention: ranking of the targeted schemes, "published" or "loss_increasing".
        soft: selected entries times U[0, 0.5) (True) or 0 (False).
        rescale: "random" only: the seed's channel dropout (selected 0, kept times 1/(1-p),
            ``soft`` ignored) instead of the masking form.
        decode: maps a code to logits, for the targeted schemes.
        loss: the task loss of the logits, for the targeted schemes.

    Returns:
        (masked code, detached, shape of ``code``; mask broadcastable to it).

    Raises:
        ValueError: unknown scheme or convention, p outside [0, 1], no decode/loss for a
            targeted scheme.
    """
    check_choice(scheme, SCHEMES, "masking scheme")
    check_choice(convention, CONVENTIONS, "convention")
    p = check_fraction(p, "p")
    if scheme == "random":
        mask = random_channel_mask(code, p, soft, rescale)
    else:
        if decode is None or loss is None:
            raise ValueError(f"masking scheme {scheme!r} is targeted and needs decode= and loss=")
        grad = code_gradient(code, decode, loss)
        make = channel_mask if scheme == "channel" else spatial_mask
        mask = make(code, grad, p, convention, soft)
    return (code.detach() * mask).detach(), mask
