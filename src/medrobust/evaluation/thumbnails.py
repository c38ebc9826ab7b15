"""Corruption thumbnails: one in-plane slice of the clean and the corrupted image.

The grid writes one per (corruption entry, severity), from the first case of the split
and the first model that reaches it, to ``examples/corruptions/`` for the report.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.evaluation.cases import valid_range
from medrobust.evaluation.examples import EXAMPLES_DIR, read_npz, write_npz
from medrobust.evaluation.types import Case, Row

THUMBNAILS_DIR = "corruptions"  # under the grid's examples/ folder


def thumbnail_name(label: str, severity: int) -> str:
    """File name of a corruption entry's thumbnail at one severity.

    Example:
        >>> thumbnail_name("motion (strong)", 3)
        'motion-strong_s3.npz'
    """
    return f"{re.sub(r'[^A-Za-z0-9.]+', '-', label).strip('-')[:60]}_s{int(severity)}.npz"


def thumbnail_path(out: Path, label: str, severity: int) -> Path:
    """Where a grid writing to ``out`` keeps the thumbnail of (corruption entry, severity).

    Example:
        >>> thumbnail_path(Path("results"), "noise", 2).as_posix()
        'results/examples/corruptions/noise_s2.npz'
    """
    return Path(out) / EXAMPLES_DIR / THUMBNAILS_DIR / thumbnail_name(label, severity)


def _in_plane(volume: np.ndarray, axis: int | None, label: np.ndarray | None) -> np.ndarray:
    """(C, *spatial) -> (H, W) (or (H, W, 3) for RGB 2D): channel 0, one slice across ``axis``.

    The slice with the most foreground (label), or the central one.
    """
    if axis is None:  # a 2D image is its own slice
        return np.moveaxis(volume, 0, -1) if volume.shape[0] == 3 else volume[0]
    image = volume[0]
    idx = image.shape[axis] // 2
    if label is not None and label.ndim == image.ndim and (label > 0).any():
        idx = int((np.moveaxis(label, axis, 0) > 0).reshape(label.shape[axis], -1).sum(1).argmax())
    return np.take(image, idx, axis=axis)


def save_thumbnail(path: Path, c: Case, x_c: torch.Tensor, row: Row, params: dict[str, Any]) -> Path:
    """Write the clean and corrupted in-plane slice of one run (``np.savez_compressed``, no pickles).

    Args:
        path: the ``.npz`` file (:func:`thumbnail_path`).
        c: the prepared case.
        x_c: its corrupted image (1, C, *spatial).
        row: the run's store row.
        params: what the corruption drew (its slice axis).

    Returns:
        ``path``.
    """
    axis = params.get("through_plane_axis")
    label = c.y[0, 0].cpu().numpy() if c.segmentation else None
    lo, hi = valid_range(c.x, c.imap)
    arrays = {"clean": _in_plane(c.x[0].cpu().numpy(), axis, label).astype(np.float32),
              "corrupted": _in_plane(x_c[0].cpu().numpy(), axis, label).astype(np.float32)}
    info = {"perturbation": row.perturbation, "corruption": row.attack, "severity": row.eps_stated,
            "case_id": row.case_id, "model": row.model, "low": lo, "high": hi, "volume_slice": int(axis is not None)}
    return write_npz(path, arrays, info)


def load_thumbnail(path: Path) -> dict[str, Any]:
    """Read a thumbnail written by :func:`save_thumbnail` (never unpickles).

    Args:
        path: the ``.npz`` file.

    Returns:
        ``clean`` and ``corrupted`` slices (H, W) float32 and ``info`` (perturbation,
        corruption, severity, case_id, model, low, high, volume_slice).
    """
    return read_npz(path)
