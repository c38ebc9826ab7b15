"""One entry point from a path the user gives to a dataset split.

Accepted sources:
- a Decathlon ``dataset.json`` (3D or 2D segmentation; splits training/validation/test),
- an nnU-Net v2 raw ``dataset.json`` (``channel_names``, ``file_ending``, ``imagesTr``...;
  splits train/val from ``splits_final.json`` fold 0, ``train:K``/``val:K`` fold K, test =
  ``imagesTs``; see :mod:`medrobust.data.nnunet_raw`),
- a folder of class folders ``<root>/<split>/<class>/*.png`` (2D classification),
- a CSV ``image,label[,split]`` of images (classification).
Images are NIfTI, NRRD, MetaImage, DICOM series folders or PNG/JPEG
(:mod:`medrobust.data.readers`). Split names: ``train``/``training``, ``val``/``validation``,
``test``.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medrobust.data.datalists import load_class_folders, load_classification_csv, load_decathlon_labels
from medrobust.data.io import DataError, is_image_2d
from medrobust.data.nnunet_raw import load_datalist
from medrobust.data.transforms import MedicalDataset, make_dataset

Task = Literal["segmentation", "classification"]
_FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}


@dataclass
class Split:
    """A dataset split ready for training or evaluation.

    Attributes:
        dataset: items {"image": (C, *spatial) float32, "label", "id", "meta"}.
        classes: class names, index = label value.
        task: "segmentation" or "classification".
        spatial_dims: 2 or 3. in_channels: image channels C.
        source: the path the split came from.
        normalization: the intensity normalisation applied ("zscore", "ct:-175,250", ...).
    """

    dataset: MedicalDataset
    classes: list[str]
    task: Task
    spatial_dims: int
    in_channels: int
    source: Path
    normalization: str


def _csv_items(csv_path: Path, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    items, classes = load_classification_csv(csv_path)
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "split" in rows[0]:
        wanted = _FOLDER_SPLITS.get(split, split)
        keep = [i for i, r in enumerate(rows) if _FOLDER_SPLITS.get(r["split"].strip(), r["split"].strip()) == wanted]
        items = [items[i] for i in keep]
    if not items:
        raise DataError(f"{csv_path}: no cases for split {split!r}")
    return items, classes


def open_split(path: str | Path, split: str, *, normalization: str | None = None,
               spatial_size: tuple[int, ...] | None = None, augment: bool = False,
               max_cases: int | None = None, spacing: Sequence[float] | None = None) -> Split:
    """Open ``split`` of the dataset at ``path`` (see the module docstring for the forms).

    ``normalization`` defaults to "zscore" for volumes and "minmax" for PNG/JPEG; ``spacing``
    (mm) resamples volumes to that voxel size (a model that states one, e.g. nnU-Net's plan).
    Raises DataError (a ValueError) naming the path when the source or split is unusable.
    """
    src = Path(path)
    if not src.exists():
        raise DataError(f"{src}: no such datalist, CSV or class folder")
    if src.is_dir():
        folder = src / _FOLDER_SPLITS.get(split, split)
        if not folder.is_dir():
            raise DataError(f"{src}: no folder {folder.name!r} for split {split!r}")
        items, classes = load_class_folders(folder)
        task: Task = "classification"
    elif src.suffix.lower() == ".csv":
        items, classes = _csv_items(src, split)
        task = "classification"
    else:
        items = load_datalist(src, split)
        classes = load_decathlon_labels(src)
        task = "segmentation"
    if max_cases is not None:
        items = items[:max_cases]
    first_image = items[0]["image"] if isinstance(items[0]["image"], str) else items[0]["image"][0]
    norm = normalization or ("minmax" if is_image_2d(first_image) else "zscore")
    dataset = make_dataset(items, task=task, normalization=norm, spatial_size=spatial_size, spacing=spacing,
                           num_classes=len(classes), augment=augment)
    first = dataset[0]["image"]
    return Split(dataset=dataset, classes=classes, task=task, spatial_dims=first.ndim - 1,
                 in_channels=int(first.shape[0]), source=src, normalization=norm)
