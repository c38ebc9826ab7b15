"""From datalist items to training tensors: loading, checks, spacing, crop/pad, normalisation.

``make_dataset(items, ...)`` returns a ``torch.utils.data.Dataset`` whose items are

    {"image": float32 (C, *spatial) in model units,
     "label": int64 (1, *spatial) (segmentation) or int64 scalar (classification),
     "id": str,
     "meta": {"affine": (4, 4) float64 source affine, "grid_affine": (4, 4) float64 affine
              of the returned grid (differs from "affine" only after spacing/crop/pad),
              "spacing": (3,) float64 mm of the returned grid, "source": image path,
              "intensity": IntensityMap.to_dict() of the normalisation applied}}

Files are read by :mod:`medrobust.data.readers` (MONAI's ``LoadImage``, one file at a
time) and checked here *outside* any MONAI ``Compose``, because MONAI re-raises every error
inside a transform chain as a ``RuntimeError``; our checks must reach the user as
``DataError`` naming the file.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    RandAffined,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    Spacingd,
    SpatialPadd,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from medrobust.data.io import DataError
from medrobust.data.readers import read_image
from medrobust.units import IntensityMap

TASKS = ("segmentation", "classification")
AFFINE_TOL = 1e-3


@dataclass(frozen=True)
class Normalization:
    """An intensity normalisation spec, parsed from a string.

    - ``"zscore"``: per case, mean/std of the non-zero voxels, applied to all voxels.
    - ``"ct:LO,HI"``: CT window [LO, HI] HU to [0, 1], clipped (e.g. ``"ct:-175,250"``).
    - ``"minmax"``: per case [min, max] to [0, 1]; ``"minmax:LO,HI"``: fixed range
      (``"minmax:0,255"`` for 8-bit images).
    - ``"none"``: identity.
    - ``"linear:OFFSET,SCALE[,LO,HI]"``: the fixed map ``(x - OFFSET) / SCALE``, clipped to
      [LO, HI] model units when given (a model source's preprocessing); ``"linear-hu:..."``
      states the raw units as HU.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    fixed: IntensityMap | None = None  # the "linear" kinds

    @classmethod
    def parse(cls, spec: str | Normalization) -> Normalization:
        """The normalisation a text spec names (a ``Normalization`` passes through)."""
        if isinstance(spec, Normalization):
            return spec
        text = str(spec).strip().lower()
        kind, _, args = text.partition(":")
        if kind in ("zscore", "none") and not args:
            return cls(kind)
        if kind in ("ct", "minmax"):
            if not args and kind == "minmax":
                return cls(kind)
            try:
                low, high = (float(v) for v in args.split(","))
            except ValueError:
                raise ValueError(f"normalization {spec!r}: expected '{kind}:LOW,HIGH' with two numbers") from None
            if not high > low:
                raise ValueError(f"normalization {spec!r}: needs HIGH > LOW")
            return cls(kind, low, high)
        if kind in ("linear", "linear-hu"):
            try:
                values = [float(v) for v in args.split(",")]
                clip = (values[2], values[3]) if len(values) == 4 else None
                if len(values) not in (2, 4):
                    raise ValueError("expected 2 or 4 numbers")
                return cls(kind, fixed=IntensityMap(values[0], values[1], clip, "HU" if kind == "linear-hu" else "raw"))
            except ValueError as err:
                raise ValueError(f"normalization {spec!r}: expected '{kind}:OFFSET,SCALE[,LO,HI]' ({err})") from None
        raise ValueError(f"unknown normalization {spec!r}; allowed: 'zscore', 'ct:LO,HI', 'minmax', 'minmax:LO,HI', "
                         "'linear:OFFSET,SCALE[,LO,HI]', 'linear-hu:...', 'none'")

    def intensity_map(self, raw: np.ndarray) -> IntensityMap:
        """The IntensityMap for one case's raw image (statistics from ``raw`` when per case)."""
        if self.fixed is not None:
            return self.fixed
        if self.kind == "ct":
            return IntensityMap.ct_window(self.low, self.high)  # type: ignore[arg-type]
        if self.kind == "minmax":
            if self.low is not None:
                return IntensityMap.min_max(self.low, self.high)  # type: ignore[arg-type]
            lo, hi = float(raw.min()), float(raw.max())
            return IntensityMap.min_max(lo, hi if hi > lo else lo + 1.0)
        if self.kind == "zscore":
            values = raw[raw != 0] if np.any(raw != 0) else raw.reshape(-1)
            std = float(values.std(dtype=np.float64))
            return IntensityMap.z_score(float(values.mean(dtype=np.float64)), std if std > 0 else 1.0)
        return IntensityMap.identity()


def _read(path: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(array (C, *spatial) float32, affine 4x4, spacing mm) of any supported image (see data.readers)."""
    array, meta = read_image(path)
    return array, meta["affine"], meta["spacing"]


def _check_same_grid(path: str, shape: tuple[int, ...], affine: np.ndarray, ref: str,
                     ref_shape: tuple[int, ...], ref_affine: np.ndarray) -> None:
    if shape != ref_shape:
        raise DataError(f"{path}: shape {shape} differs from {ref} shape {ref_shape}")
    diff = float(np.abs(affine - ref_affine).max())
    if diff > AFFINE_TOL:
        raise DataError(f"{path}: affine differs from {ref} (max difference {diff:.3g} > {AFFINE_TOL})")


def _load_image(image: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], str]:
    paths = [image] if isinstance(image, str) else list(image)
    arrays, affine, spacing = [], None, None
    for p in paths:
        arr, aff, sp = _read(p)
        if affine is None:
            affine, spacing = aff, sp
        else:
            _check_same_grid(p, arr.shape[1:], aff, paths[0], arrays[0].shape[1:], affine)
        arrays.append(arr)
    return np.concatenate(arrays, axis=0), affine, spacing, paths[0]  # type: ignore[return-value]


def _load_label(path: str, image_path: str, image_shape: tuple[int, ...], image_affine: np.ndarray,
                num_classes: int | None) -> np.ndarray:
    """Label map ``(1, *spatial)`` int64, checked against the image grid and class range."""
    arr, aff, _ = _read(path)
    if arr.shape[0] != 1:
        raise DataError(f"{path}: label must have one channel, got {arr.shape[0]}")
    _check_same_grid(path, arr.shape[1:], aff, f"image {image_path}", image_shape, image_affine)
    values = np.unique(arr)
    if not np.all(values == np.round(values)):
        raise DataError(f"{path}: label values must be integer class indices, found {values[values != np.round(values)][:5]}")
    bad = values[(values < 0) | (values >= num_classes)] if num_classes else values[values < 0]
    if bad.size:
        allowed = f"0..{num_classes - 1} (num_classes={num_classes})" if num_classes else ">= 0"
        raise DataError(f"{path}: label values {bad.astype(int).tolist()} outside the declared classes {allowed}")
    return arr.astype(np.int64)


def _voxel_spacing(affine: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)), dtype=torch.float64)


class MedicalDataset(Dataset):
    """Dataset built by :func:`make_dataset`; prepares (and optionally caches) each case."""

    def __init__(self, items: Sequence[dict[str, Any]], task: str, normalization: Normalization,
                 spatial_size: Sequence[int] | None, spacing: Sequence[float] | None,
                 num_classes: int | None, augment: bool, cache: bool) -> None:
        self.items = list(items)
        self.task, self.norm, self.num_classes = task, normalization, num_classes
        self.spatial_size = tuple(int(s) for s in spatial_size) if spatial_size is not None else None
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self._augment: Compose | None = None
        self._cache = [self._prepare(item) for item in self.items] if cache else None
        if augment and self.items:
            first = self._cache[0] if self._cache else self._prepare(self.items[0])
            self._augment = self._augmentation(first["image"].ndim - 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self._cache[index] if self._cache is not None else self._prepare(self.items[index])
        if self._augment is None:
            return case
        # Seed MONAI's own RNG from torch's, so torch.manual_seed (and DataLoader's per-worker
        # seeding) makes augmentation reproducible and distinct between workers.
        self._augment.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,))))
        keys = ["image", "label"] if self.task == "segmentation" and "label" in case else ["image"]
        out = self._augment({k: case[k] for k in keys})
        image = convert_to_tensor(out["image"], track_meta=False).float()
        clip = case["meta"]["intensity"]["clip"]
        if clip:
            image = image.clamp(*clip)
        result = {**case, "image": image}
        if "label" in keys:
            result["label"] = convert_to_tensor(out["label"], track_meta=False).round().long()
        return result

    def _augmentation(self, spatial_dims: int) -> Compose:
        seg = self.task == "segmentation"
        keys = ["image", "label"] if seg else ["image"]
        return Compose([
            RandAffined(keys, prob=0.5, rotate_range=(0.15,) * (1 if spatial_dims == 2 else 3),
                        scale_range=(0.1,) * spatial_dims, translate_range=(4,) * spatial_dims,
                        mode=("bilinear", "nearest") if seg else "bilinear",
                        padding_mode=("border", "zeros") if seg else "border", allow_missing_keys=True),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandGaussianNoised("image", std=0.03, prob=0.3),
        ])

    def _prepare(self, item: dict[str, Any]) -> dict[str, Any]:
        if "image" not in item:
            raise DataError(f"datalist item {item!r} has no 'image'")
        raw, affine, spacing, source = _load_image(item["image"])
        data: dict[str, Any] = {"image": MetaTensor(torch.from_numpy(raw), affine=torch.as_tensor(affine))}
        label = item.get("label")
        if self.task == "segmentation" and label is not None:
            lab = _load_label(str(label), source, raw.shape[1:], affine, self.num_classes)
            data["label"] = MetaTensor(torch.from_numpy(lab).float(), affine=torch.as_tensor(affine))
        keys = list(data)
        imap = self.norm.intensity_map(raw)
        spatial: list[Any] = []
        if self.spacing is not None:
            if raw.ndim != 4:
                raise ValueError(f"spacing={self.spacing} needs 3D images; {source} is 2D")
            spatial.append(Spacingd(keys, pixdim=self.spacing, mode=("bilinear", "nearest")[: len(keys)]))
        if self.spatial_size is not None:
            if len(self.spatial_size) != raw.ndim - 1:
                raise ValueError(f"spatial_size={self.spatial_size} has {len(self.spatial_size)} axes but "
                                 f"{source} has {raw.ndim - 1} spatial axes")
            if self.task == "classification":  # area averaging to shrink, linear interpolation to grow
                shrink = all(t <= s for t, s in zip(self.spatial_size, raw.shape[1:]))
                mode = "area" if shrink else ("bilinear" if raw.ndim == 3 else "trilinear")
                spatial.append(Resized(keys, self.spatial_size, mode=mode))
            else:  # pad with the case's raw minimum (background), then crop the centre
                spatial.append(SpatialPadd("image", self.spatial_size, value=float(raw.min())))
                if "label" in data:
                    spatial.append(SpatialPadd("label", self.spatial_size))
                spatial.append(CenterSpatialCropd(keys, self.spatial_size))
        if spatial:
            data = Compose(spatial)(data)
        grid_affine = torch.as_tensor(data["image"].affine, dtype=torch.float64)
        # The recorded IntensityMap is the one applied (single source of truth); MONAI's
        # NormalizeIntensityd(nonzero=True) would leave zeros unmapped, which no affine map inverts.
        image = imap.raw_to_model(convert_to_tensor(data["image"], track_meta=False).float()).float()
        out: dict[str, Any] = {"image": image, "id": str(item.get("id", source)), "meta": {
            "affine": torch.as_tensor(affine, dtype=torch.float64), "grid_affine": grid_affine,
            "spacing": _voxel_spacing(grid_affine.numpy()) if raw.ndim == 4 else torch.ones(3, dtype=torch.float64),
            "source": source, "intensity": imap.to_dict()}}
        if "label" in data:
            out["label"] = convert_to_tensor(data["label"], track_meta=False).round().long()
        elif self.task == "classification" and label is not None:
            k = int(label)
            if k < 0 or (self.num_classes and k >= self.num_classes):
                raise DataError(f"{source}: class label {k} outside 0..{(self.num_classes or 1) - 1} "
                                f"(num_classes={self.num_classes})")
            out["label"] = torch.tensor(k, dtype=torch.int64)
        return out


def make_dataset(items: Sequence[dict[str, Any]], task: str = "segmentation", normalization: str | Normalization = "zscore",
                 spatial_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                 num_classes: int | None = None, augment: bool = False, cache: bool = True) -> MedicalDataset:
    """Dataset over datalist items (see :mod:`medrobust.data.datalists`).

    Args:
        items: ``[{"image": path or list of paths (channels), "label": path | int | None, "id": str}]``.
        task: "segmentation" (label maps) or "classification" (integer labels).
        normalization: a :class:`Normalization` spec string ("zscore", "ct:-175,250", ...).
        spatial_size: output spatial shape; segmentation pads (with the case's minimum) and
            centre-crops, classification resizes.
        spacing: resample 3D images to this voxel size in mm (labels: nearest neighbour).
        num_classes: declared classes; label values outside ``range(num_classes)`` raise.
        augment: random affine, intensity scale/shift and noise (for training).
        cache: prepare every case now and keep it in memory (errors surface here); otherwise
            each case is read on access.

    Raises:
        DataError: a file is missing/corrupt, has NaN/Inf, or image and label disagree in
            shape or affine (tolerance 1e-3) or the label leaves ``range(num_classes)``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return MedicalDataset(items, task, Normalization.parse(normalization), spatial_size, spacing,
                          num_classes, augment, cache)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader collate: stacks ``image`` and ``label``, keeps ``id`` and ``meta`` as lists.

    Images stack to (B, C, *), labels to (B, 1, *) or (B,), only when every item has one.
    """
    out: dict[str, Any] = {"image": torch.stack([b["image"] for b in batch]),
                           "id": [b["id"] for b in batch], "meta": [b["meta"] for b in batch]}
    if all("label" in b for b in batch):
        out["label"] = torch.stack([b["label"] for b in batch])
    return out
