"""Batched, seeded random "subject" synthesis for the demo sets: deformation and acquisition.

MONAI's Rand2DElastic/Rand3DElastic and TorchIO's RandomElasticDeformation work one
sample at a time with tens of milliseconds (MONAI) to ~1.5 s (TorchIO, per 3D volume) of
overhead each; the demo must build hundreds of samples in a few seconds, so the same
operations (random affine + smooth elastic field in one sampling grid, polynomial bias
field, Rician noise) are done here for a whole batch with a handful of tensor operations.
All randomness comes from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from functools import reduce
from itertools import product

import torch
import torch.nn.functional as F


def _uniform(gen: torch.Generator, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=gen)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, D, D)`` from angles ``(N, 1)`` (2D) or ``(N, 3)`` (3D, x-y-z)."""
    c, s = torch.cos(angles), torch.sin(angles)
    n = angles.shape[0]
    if angles.shape[1] == 1:
        return torch.stack([c[:, 0], -s[:, 0], s[:, 0], c[:, 0]], 1).view(n, 2, 2)
    eye = torch.eye(3).expand(n, 3, 3)
    out = eye
    for axis, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        r = eye.clone()
        r[:, i, i], r[:, j, j] = c[:, axis], c[:, axis]
        r[:, i, j], r[:, j, i] = -s[:, axis], s[:, axis]
        out = out @ r
    return out


def random_grid(shape: Sequence[int], n: int, gen: torch.Generator, *, rotate: float = 0.15, scale: float = 0.08,
                translate: float = 2.0, elastic: float = 2.0, control_points: int = 5) -> torch.Tensor:
    """Sampling grids ``(N, *shape, D)`` for ``F.grid_sample`` (align_corners=True).

    Each grid is a random affine map about the volume centre (rotation up to ``rotate``
    radians per axis, scale factors in 1 +- ``scale``, shift up to ``translate`` voxels)
    plus a smooth elastic displacement: normal values with standard deviation ``elastic``
    voxels on ``control_points`` per axis, interpolated (cubic in 2D, linear in 3D).
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    centred = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in shape],
                                         indexing="ij"), -1)  # (*shape, D) voxel offsets from the centre
    rot = _rotation(_uniform(gen, (n, 1 if d == 2 else 3), -rotate, rotate))
    matrix = rot @ torch.diag_embed(_uniform(gen, (n, d), 1 - scale, 1 + scale))
    shift = _uniform(gen, (n, d), -translate, translate)
    coarse = elastic * torch.randn((n, d) + (control_points,) * d, generator=gen)
    field = F.interpolate(coarse, size=shape, mode="bicubic" if d == 2 else "trilinear", align_corners=True)
    points = torch.einsum("nij,...j->n...i", matrix, centred) + shift.view(n, *([1] * d), d)
    points = points + torch.movedim(field, 1, -1)
    half = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float32)
    return (points / half).flip(-1)  # grid_sample wants (x, y, z) = last axis first


def deform(volumes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``(N, C, *shape)`` with grids from :func:`random_grid` (bilinear, zero padding)."""
    return F.grid_sample(volumes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def bias_field(shape: Sequence[int], n: int, gen: torch.Generator, *, degree: int = 3,
               strength: float = 0.3) -> torch.Tensor:
    """Smooth multiplicative fields ``(N, 1, *shape)``: exp of a random polynomial of ``degree``.

    The polynomial is in coordinates scaled to [-1, 1], its coefficients uniform in
    +- ``strength`` / (number of terms).
    """
    shape = tuple(int(s) for s in shape)
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    powers = [p for p in product(range(degree + 1), repeat=len(shape)) if 0 < sum(p) <= degree]
    basis = torch.stack([reduce(operator.mul, (c**k for c, k in zip(coords, p))) for p in powers])  # (P, *shape)
    coeff = _uniform(gen, (n, len(powers)), -strength, strength) / math.sqrt(len(powers))
    return torch.exp(torch.einsum("np,p...->n...", coeff, basis)).unsqueeze(1)


def rician_noise(images: torch.Tensor, gen: torch.Generator, max_std: float = 0.04) -> torch.Tensor:
    """Magnitude of a complex signal with Gaussian noise, std per sample uniform in [0, max_std]."""
    std = _uniform(gen, (images.shape[0],) + (1,) * (images.ndim - 1), 0.0, max_std)
    real = images + std * torch.randn(images.shape, generator=gen)
    imag = std * torch.randn(images.shape, generator=gen)
    return torch.sqrt(real**2 + imag**2)
