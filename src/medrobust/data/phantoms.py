"""Synthetic phantoms for fast unit tests, 2D or 3D, deterministic for a seed.

Nested ellipsoids for segmentation and blobs for classification.

No library ships labelled random ellipsoid phantoms with a class per shell, so they are
drawn here with a few tensor operations.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medrobust.data.datalists import save_decathlon


def _grid(shape: Sequence[int]) -> torch.Tensor:
    """Coordinates in [-1, 1], shape ``(ndim, *shape)``."""
    axes = [torch.linspace(-1.0, 1.0, int(n)) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(f"shape must have 2 or 3 axes of size >= 4, got {shape}")
    return shape


def _ellipsoid(grid: torch.Tensor, centre: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Boolean mask of an axis-aligned ellipsoid; centre and radii ``(ndim,)`` in [-1, 1] units."""
    shape = (-1,) + (1,) * (grid.ndim - 1)
    return (((grid - centre.view(shape)) / radii.view(shape)) ** 2).sum(0) <= 1.0


def phantom_segmentation(shape: Sequence[int] = (16, 16, 16), num_classes: int = 3, seed: int = 0,
                         batch: int = 1, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Nested ellipsoids, class k inside class k-1, with intensity k/(K-1) plus Gaussian noise.

    Returns:
        image: float32 ``(B, 1, *shape)``, roughly in [0, 1] (model units).
        label: int64 ``(B, 1, *shape)`` with values in ``range(num_classes)``; every class
            is present for shapes >= 8 per axis.
    """
    shape = _check_shape(shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    grid, nd = _grid(shape), len(shape)
    labels = torch.zeros((batch, 1, *shape), dtype=torch.int64)
    for b in range(batch):
        centre = (torch.rand(nd, generator=gen) - 0.5) * 0.2
        outer = 0.7 + 0.2 * torch.rand(nd, generator=gen)
        for k in range(1, num_classes):
            radii = outer * (1.0 - (k - 1) / num_classes)
            labels[b, 0][_ellipsoid(grid, centre, radii)] = k
    image = labels.float() / (num_classes - 1) + noise * torch.randn(labels.shape, generator=gen)
    return image, labels


def phantom_classification(shape: Sequence[int] = (32, 32), num_classes: int = 2, seed: int = 0,
                           batch: int = 8, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """An "organ" ellipsoid (intensity 0.5); class c > 0 adds a blob of intensity 0.5 + 0.5c/(K-1).

    Labels cycle through the classes (balanced), then are shuffled.

    Returns:
        image: float32 ``(B, 1, *shape)``; label: int64 ``(B,)`` in ``range(num_classes)``.
    """
    shape = _check_shape(shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    grid, nd = _grid(shape), len(shape)
    label = (torch.arange(batch) % num_classes)[torch.randperm(batch, generator=gen)]
    image = noise * torch.randn((batch, 1, *shape), generator=gen)
    for b in range(batch):
        centre = (torch.rand(nd, generator=gen) - 0.5) * 0.2
        image[b, 0][_ellipsoid(grid, centre, 0.6 + 0.2 * torch.rand(nd, generator=gen))] += 0.5
        if label[b] > 0:
            spot = centre + (torch.rand(nd, generator=gen) - 0.5) * 0.4
            image[b, 0][_ellipsoid(grid, spot, torch.full((nd,), 0.25))] = 0.5 + 0.5 * float(label[b]) / (num_classes - 1)
    return image, label


def build_phantom_segmentation(root: str | Path, shape: Sequence[int] = (16, 16, 16), n_train: int = 4,
                               n_val: int = 2, n_test: int = 2, num_classes: int = 3, seed: int = 0,
                               spacing_mm: float = 2.0) -> Path:
    """A tiny Decathlon folder of 3D phantoms (raw intensities ``100 * image + 50``) for tests.

    Returns:
        the folder (``root``), holding ``dataset.json``.
    """
    if len(_check_shape(shape)) != 3:
        raise ValueError(f"shape must be 3D for a NIfTI phantom set, got {tuple(shape)}")
    n = n_train + n_val + n_test
    image, label = phantom_segmentation(shape, num_classes, seed=seed, batch=n)
    cases = [{"id": f"phantom_{i:03d}", "image": (100 * image[i, 0] + 50).numpy(), "label": label[i, 0].numpy()}
             for i in range(n)]
    splits = {"training": cases[:n_train], "validation": cases[n_train:n_train + n_val], "test": cases[n_train + n_val:]}
    affine = np.diag([spacing_mm] * 3 + [1.0])
    save_decathlon(root, splits, ["background"] + [f"class{k}" for k in range(1, num_classes)], affine,
                   name="phantom", description="nested ellipsoid phantoms (medrobust.data.phantoms)")
    return Path(root)
