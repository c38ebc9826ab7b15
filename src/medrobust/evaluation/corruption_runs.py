"""Corruption runs of the grid: a corruption is a perturbation with severities in place of eps.

One run = one (model, corruption entry, severity, case): the case's model-unit image is
corrupted by :func:`medrobust.corruptions.corrupt` on its own grid affine, seeded by
``(grid seed, case, corruption)`` only, so every model of the grid sees the same corrupted
image. The store row has ``kind="corruption"``, ``attack`` = the corruption name,
``eps_stated`` = the severity, ``eps_unit="severity"``, no norm or eps in model units, the
achieved norms/SSIM/PSNR of the change, ``attack_seconds`` = the time to corrupt, and
``options_json`` = ``{"options": ..., "params": <everything corrupt() drew>}``.

For the first case of the split, a thumbnail (one in-plane slice of the clean and of the
corrupted image) is written per (corruption entry, severity) to
``examples/corruptions/`` for the report.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medrobust.evaluation.config import CorruptionSpec
from medrobust.evaluation.examples import read_npz, write_npz
from medrobust.evaluation.store import outcome_columns
from medrobust.units import budget_for_case

THUMBNAILS_DIR = "corruptions"  # under the grid's examples/ folder


def thumbnail_name(label: str, severity: int) -> str:
    """File name of a corruption entry's thumbnail at one severity."""
    return f"{re.sub(r'[^A-Za-z0-9.]+', '-', label).strip('-')[:60]}_s{int(severity)}.npz"


def run_corruption(cfg: Any, lm: Any, p: CorruptionSpec, severity: int, c: Any,
                   score: Callable[[torch.Tensor], dict[str, Any]]) -> dict[str, Any]:
    """The store row of one corruption run (see the module docstring).

    Args:
        cfg: the GridConfig; lm: the LoadedModel; c: the grid's prepared case (x (1, C, *),
            y, imap, model, clean score, ssim_ref, data_range, item).
        score: maps logits (1, K, *) to the grid's score dict of one prediction.
    """
    from medrobust import metrics
    from medrobust.corruptions import corrupt
    from medrobust.models.inference import infer

    t0 = time.perf_counter()
    meta = c.item["meta"]
    x_c, params = corrupt(c.x[0], p.corruption, severity, seed=cfg.seed, case_id=c.id,
                          affine=meta.get("grid_affine", meta.get("affine")), intensity=c.imap,
                          through_plane=p.options.get("through_plane"))
    x_c = x_c.unsqueeze(0)
    corrupt_seconds = time.perf_counter() - t0
    out = score(infer(c.model, x_c))
    norms = {k: float(v.reshape(-1)[0]) for k, v in metrics.perturbation_norms(c.x, x_c, c.imap).items()}
    with torch.no_grad():
        ssim = float(c.ssim_ref(x_c)[0]) if c.ssim_ref is not None else None
    clean, seg = c.clean, c.y.ndim > 1
    row = {"config_hash": cfg.config_hash, "model": lm.name, "perturbation": p.label, "kind": "corruption",
           "attack": p.corruption, "norm": None,
           "options_json": json.dumps({"options": p.options, "params": params}, sort_keys=True),
           "eps_stated": float(severity), "eps_unit": "severity", "eps_model": None, "eps_raw": None,
           "case_id": c.id, "task": lm.split.task, "score_name": "dice_mean" if seg else "accuracy",
           **outcome_columns(clean, out), "label": None if seg else int(c.y[0]), **norms, "ssim": ssim,
           "psnr": float(metrics.psnr(c.x, x_c, c.data_range)[0]) if "psnr" in cfg.metrics else None,
           "loss_initial": None, "loss_best": None, "attack_seconds": corrupt_seconds}
    thumbnail = Path(cfg.out) / "examples" / THUMBNAILS_DIR / thumbnail_name(p.label, severity)
    if c.id == str(lm.split.dataset[0]["id"]) and not thumbnail.exists():  # the first model's stays
        save_thumbnail(thumbnail, c, x_c, row, params)
    row["seconds"] = time.perf_counter() - t0
    return row


def _in_plane(volume: np.ndarray, axis: int | None, label: np.ndarray | None) -> np.ndarray:
    """(C, *spatial) -> (H, W) (or (H, W, 3) for RGB 2D): channel 0, slice across ``axis`` with
    the most foreground (label) or the central one."""
    if axis is None:  # a 2D image is its own slice
        return np.moveaxis(volume, 0, -1) if volume.shape[0] == 3 else volume[0]
    image = volume[0]
    idx = image.shape[axis] // 2
    if label is not None and label.ndim == image.ndim and (label > 0).any():
        idx = int((np.moveaxis(label, axis, 0) > 0).reshape(label.shape[axis], -1).sum(1).argmax())
    return np.take(image, idx, axis=axis)


def save_thumbnail(path: Path, c: Any, x_c: torch.Tensor, row: dict[str, Any], params: dict[str, Any]) -> Path:
    """Write the clean and corrupted in-plane slice of one run (``np.savez_compressed``, no pickles)."""
    axis = params.get("through_plane_axis")
    label = c.y[0, 0].cpu().numpy() if c.y.ndim > 1 else None
    lo, hi = budget_for_case("linf", 0.0, "model", c.x, c.imap).range_for(c.x)
    arrays = {"clean": _in_plane(c.x[0].cpu().numpy(), axis, label).astype(np.float32),
              "corrupted": _in_plane(x_c[0].cpu().numpy(), axis, label).astype(np.float32)}
    info = {"perturbation": row["perturbation"], "corruption": row["attack"], "severity": row["eps_stated"],
            "case_id": row["case_id"], "model": row["model"], "low": float(lo.reshape(-1)[0]),
            "high": float(hi.reshape(-1)[0]), "volume_slice": int(axis is not None)}
    return write_npz(path, arrays, info)


def load_thumbnail(path: Path) -> dict[str, Any]:
    """Read a thumbnail written by :func:`save_thumbnail` (never unpickles)."""
    return read_npz(path)
