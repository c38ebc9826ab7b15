"""Demo data from real anatomy: the MNI152 (ICBM 2009a) T1 template and its tissue maps.

nilearn ships the skull-stripped T1 template and grey/white-matter probability maps at
1 mm (nothing is downloaded). From them:

- :func:`build_demo_segmentation` writes a Decathlon folder of 3D "subjects" with labels
  background=0, gm=1, wm=2, csf=3 (CSF = inside the template's brain, where neither GM
  nor WM dominates: ventricles and sulci, which are dark in T1).
- :func:`build_demo_classification` writes 2D axial slices with and without a synthetic
  lesion as class folders of PNG (``train/``, ``val/``, ``test/``, each with
  ``healthy/`` and ``lesion/``).

Subjects differ by a random elastic + affine deformation (image and tissue maps deformed
with one sampling grid; labels are the arg-max of the deformed maps, so they stay smooth),
a bias field and Rician noise, all seeded. Both builders are deterministic for a seed and
skip work when ``root`` already holds a set built with the same configuration.
"""
from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medrobust.data.datalists import save_decathlon
from medrobust.data.io import read_json_or_none, write_json_atomic, write_png
from medrobust.data.phantoms import build_phantom_segmentation, phantom_classification, phantom_segmentation
from medrobust.data.synth import bias_field, deform, random_grid, rician_noise

__all__ = ["SEG_CLASSES", "CLS_CLASSES", "build_demo_segmentation", "build_demo_classification",
           "phantom_segmentation", "phantom_classification", "build_phantom_segmentation"]

SEG_CLASSES = ["background", "gm", "wm", "csf"]
CLS_CLASSES = ["healthy", "lesion"]
MARKER = ".medrobust-demo.json"
DEMO_VERSION = 2  # 2: larger, stronger lesions (the 2D set was barely learnable)
GAIN = (800.0, 1200.0)  # raw MRI intensity of the template's brightest voxel, per subject


@lru_cache(maxsize=4)
def mni_tissues(spacing_mm: float, margin_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1 and tissue maps averaged onto a grid of ``spacing_mm`` around the brain.

    The grid covers the brain's bounding box plus ``margin_mm`` and has sides that are
    multiples of 8 voxels (so a 4-level UNet needs no padding).

    Returns:
        t1: float32 ``(X, Y, Z)`` in [0, 1]; tissue: float32 ``(3, X, Y, Z)`` partial-volume
        fractions of GM, WM, CSF; affine: (4, 4) voxel-to-world in mm (MNI space).
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    t1_img = load_mni152_template(resolution=1)
    t1 = t1_img.get_fdata(dtype=np.float32)
    brain = t1 > 0
    axes = [np.flatnonzero(brain.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    lo, hi = np.array([a[0] for a in axes]), np.array([a[-1] + 1 for a in axes])
    out = np.ceil((hi - lo + 2 * margin_mm) / spacing_mm / 8).astype(int) * 8
    n = np.round(out * spacing_mm).astype(int)  # 1 mm voxels covered by the new grid
    start = np.round((lo + hi) / 2 - n / 2).astype(int)
    window = [slice(max(s, 0), min(s + m, d)) for s, m, d in zip(start, n, t1.shape)]
    pad = [(0, 0)] + [(max(0, -s), max(0, s + m - d)) for s, m, d in zip(start, n, t1.shape)]
    t1, brain = t1[tuple(window)], brain[tuple(window)]
    gm = load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)[tuple(window)] * brain
    wm = load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)[tuple(window)] * brain
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    stack = np.pad(np.stack([t1, gm, wm, csf]), pad)
    # Area averaging = partial-volume fractions of the coarse voxels.
    small = F.interpolate(torch.from_numpy(stack)[None], size=tuple(int(v) for v in out), mode="area")[0].numpy()
    step = n / out
    affine = t1_img.affine @ np.vstack([np.column_stack([np.diag(step), start + step / 2 - 0.5]), [0, 0, 0, 1]])
    return small[0], small[1:], affine


def _labels(tissue: torch.Tensor) -> torch.Tensor:
    """Arg-max over (background, gm, wm, csf) of tissue fractions ``(N, 3, *spatial)`` -> ``(N, *spatial)``."""
    background = (1.0 - tissue.sum(1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, tissue], 1).argmax(1)


def _is_current(root: Path, config: dict[str, Any]) -> bool:
    return read_json_or_none(root / MARKER) == config


def _prepare_root(root: Path, owned: tuple[str, ...]) -> None:
    """Refuse a foreign non-empty folder; clear the parts of an outdated demo build."""
    marker = root / MARKER
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise ValueError(f"{root}: folder exists, is not empty and holds no medrobust demo ({MARKER}); "
                         "choose a new or empty folder")
    for name in owned:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def build_demo_segmentation(root: str | Path, n_train: int = 12, n_val: int = 4, n_test: int = 4,
                            seed: int = 0, spacing_mm: float = 3.5) -> Path:
    """Build (or reuse) the 3D brain-tissue Decathlon set.

    With the default 3.5 mm spacing each volume is 48 x 56 x 48 voxels (float32 NIfTI,
    raw intensities about 0..1200), labels uint8 in {0: background, 1: gm, 2: wm, 3: csf}.
    ``dataset.json`` lists fixed ``training``/``validation``/``test`` splits (test labels in
    ``labelsTs``).

    Returns:
        the path of ``root/dataset.json`` (what ``medrobust train --data`` takes).
    """
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"n_train, n_val and n_test must be >= 1, got {n_train}, {n_val}, {n_test}")
    if not 1.0 <= spacing_mm <= 10.0:
        raise ValueError(f"spacing_mm must be in [1, 10] mm, got {spacing_mm}")
    root = Path(root)
    config = {"kind": "segmentation", "version": DEMO_VERSION, "n_train": n_train, "n_val": n_val,
              "n_test": n_test, "seed": seed, "spacing_mm": float(spacing_mm)}
    if _is_current(root, config) and (root / "dataset.json").is_file():
        return root / "dataset.json"
    _prepare_root(root, ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "dataset.json"))
    t1, tissue, affine = mni_tissues(float(spacing_mm))
    n = n_train + n_val + n_test
    gen = torch.Generator().manual_seed(seed)
    shape = t1.shape
    grid = random_grid(shape, n, gen, rotate=0.15, scale=0.08, translate=2.0, elastic=1.5, control_points=5)
    moved = deform(torch.from_numpy(np.concatenate([t1[None], tissue]))[None].expand(n, -1, *shape), grid)
    images = rician_noise(moved[:, :1] * bias_field(shape, n, gen, strength=0.3), gen, max_std=0.04)
    images = images[:, 0] * _uniform_gain(gen, n).view(n, 1, 1, 1)
    labels = _labels(moved[:, 1:]).to(torch.uint8)
    cases = [{"id": f"mni_{i:03d}", "image": images[i].numpy(), "label": labels[i].numpy()} for i in range(n)]
    splits = {"training": cases[:n_train], "validation": cases[n_train:n_train + n_val],
              "test": cases[n_train + n_val:]}
    datalist = save_decathlon(root, splits, SEG_CLASSES, affine, name="medrobust-mni152-demo", modality="T1",
                   description=f"Deformed MNI152 2009a T1 subjects at {spacing_mm} mm with GM/WM/CSF labels "
                               f"from the template's tissue maps (nilearn); seed {seed}.")
    write_json_atomic(root / MARKER, config)
    return datalist


def _slice_pool(spacing_mm: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices ``(S, size, size)`` of T1 and brain fraction covering most of the brain."""
    t1, tissue, _ = mni_tissues(spacing_mm)
    brain = tissue.sum(0)
    pads = [(max(0, size - n) // 2, max(0, size - n) - max(0, size - n) // 2) for n in t1.shape[:2]] + [(0, 0)]
    t1, brain = np.pad(t1, pads), np.pad(brain, pads)
    x0, y0 = (t1.shape[0] - size) // 2, (t1.shape[1] - size) // 2
    t1, brain = t1[x0:x0 + size, y0:y0 + size], brain[x0:x0 + size, y0:y0 + size]
    area = (brain > 0.5).sum((0, 1))
    keep = area >= 0.5 * area.max()
    return np.moveaxis(t1[..., keep], -1, 0), np.moveaxis(brain[..., keep], -1, 0)


def _add_lesion(image: torch.Tensor, brain: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A Gaussian blob (sigma 2.5..4.5 px) inside the brain, 50-80 % brighter or darker."""
    inside = torch.nonzero(brain > 0.9)
    cy, cx = inside[int(torch.randint(len(inside), (1,), generator=gen))].tolist()
    yy, xx = torch.meshgrid(torch.arange(image.shape[0]), torch.arange(image.shape[1]), indexing="ij")
    sigma, amount, sign = torch.rand(3, generator=gen).tolist()
    sigma, amount = 2.5 + 2.0 * sigma, 0.5 + 0.3 * amount
    blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)) * brain.clamp(0, 1)
    return image * (1.0 + (amount if sign < 0.5 else -amount) * blob)


def _uniform_gain(gen: torch.Generator, n: int) -> torch.Tensor:
    """Per-subject scanner gain: raw intensity of the template's brightest voxel."""
    return GAIN[0] + (GAIN[1] - GAIN[0]) * torch.rand(n, generator=gen)


def build_demo_classification(root: str | Path, n_train: int = 200, n_val: int = 50, n_test: int = 50,
                              seed: int = 0, size: int = 64, spacing_mm: float = 3.0) -> Path:
    """Build (or reuse) the 2D lesion-classification set of ``size`` x ``size`` PNG slices.

    Classes ``healthy`` (0) and ``lesion`` (1), balanced in every split; written as
    ``root/{train,val,test}/{healthy,lesion}/*.png`` (8-bit grey; use normalization
    ``"minmax:0,255"``).

    Returns:
        the folder ``root`` (the class-folder source ``medrobust train --data`` takes).
    """
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(f"n_train, n_val and n_test must be >= 2 (both classes), got {n_train}, {n_val}, {n_test}")
    if not 16 <= size <= 256:
        raise ValueError(f"size must be in [16, 256] pixels, got {size}")
    root = Path(root)
    config = {"kind": "classification", "version": DEMO_VERSION, "n_train": n_train, "n_val": n_val,
              "n_test": n_test, "seed": seed, "size": size, "spacing_mm": float(spacing_mm)}
    if _is_current(root, config):
        return root
    _prepare_root(root, ("train", "val", "test"))
    slices, brains = _slice_pool(float(spacing_mm), size)
    n = n_train + n_val + n_test
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(slices), (n,), generator=gen)
    base = torch.stack([torch.from_numpy(slices), torch.from_numpy(brains)], 1)[pick]  # (N, 2, size, size)
    moved = deform(base, random_grid((size, size), n, gen, rotate=0.2, scale=0.08, translate=3.0, elastic=1.0,
                                     control_points=6))
    classes = torch.arange(n) % 2  # alternate, so every split is balanced
    anatomy = torch.stack([_add_lesion(moved[i, 0], moved[i, 1], gen) if classes[i] else moved[i, 0]
                           for i in range(n)])[:, None]
    images = rician_noise(anatomy * bias_field((size, size), n, gen, strength=0.3), gen, max_std=0.04)
    names = [(split, j) for split, count in (("train", n_train), ("val", n_val), ("test", n_test)) for j in range(count)]
    for i, (split, j) in enumerate(names):
        write_png(root / split / CLS_CLASSES[int(classes[i])] / f"{split}_{j:04d}.png", (images[i] * 200.0).clamp(0, 255))
    write_json_atomic(root / MARKER, config)
    return root
