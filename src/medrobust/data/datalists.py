"""Datalists: which files make a dataset split.

Three forms, each returning items ``{"image": abs path (or list of paths, one per channel),
"label": abs path | int | None, "id": str}``:

- Decathlon ``dataset.json`` (``training`` / ``validation`` / ``test`` lists of
  ``{"image", "label"}``; the MSD form where ``test`` lists plain path strings is accepted);
  relative paths are resolved against the JSON's folder. An image is a file in any format
  :func:`~medrobust.data.io.image_format` names, or a folder holding one DICOM series.
  (nnU-Net v2 raw datasets: :mod:`medrobust.data.nnunet_raw`.)
- Class folders ``root/<class>/*.png|jpg|jpeg`` (2D classification, as in Kaggle MRI sets).
- A CSV with columns ``image,label`` (e.g. NIfTI classification sets); optional ``id`` and
  ``split`` columns.

:func:`save_decathlon` writes a Decathlon folder (used by the demo and phantom sets).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.io import (
    IMAGE_2D_SUFFIXES,
    METAIMAGE_SUFFIXES,
    NRRD_SUFFIXES,
    DataError,
    write_json_atomic,
    write_nifti,
)

SPLITS = ("training", "validation", "test")
SPLIT_ALIASES = {"train": "training", "val": "validation", "valid": "validation", "testing": "test"}


def case_id(path: str | Path) -> str:
    """File name without its image suffix: ``imagesTr/brain_003.nii.gz`` -> ``brain_003``; a folder's name."""
    name = Path(path).name
    if Path(path).is_dir():
        return name
    for suffix in (".nii.gz", ".nii", ".dcm", *NRRD_SUFFIXES, *METAIMAGE_SUFFIXES, *IMAGE_2D_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _first_image(item: dict[str, Any]) -> str:
    image = item["image"]
    return str(image if isinstance(image, str) else image[0])


def _tails(paths: list[str], keep_suffix: bool) -> list[str] | None:
    """The shortest trailing paths (at least two parts) that tell ``paths`` apart, or None."""
    parts = [Path(p).parts if keep_suffix else Path(p).with_name(case_id(p)).parts for p in paths]
    for k in range(2, max(len(x) for x in parts) + 1):
        tails = ["/".join(x[-k:]) for x in parts]
        if len(set(tails)) == len(tails):
            return tails
    return None


def unique_ids(items: list[dict[str, Any]], explicit: Sequence[bool], where: str) -> list[dict[str, Any]]:
    """Make the case ids of one split unique (results and output files are keyed by them).

    Ids written in the datalist must be unique: a repeated one is an error. Ids taken from
    file names that repeat (``siteA/case1.nii.gz`` and ``siteB/case1.nii.gz``) become the
    shortest trailing path that tells the files apart (``siteA/case1``, ``siteB/case1``).

    Args:
        items: datalist items with ``"image"`` and ``"id"`` (changed in place).
        explicit: per item, whether its id was written in the datalist.
        where: the datalist (and split) named in errors.

    Returns:
        ``items``, every id unique.

    Raises:
        DataError: a repeated explicit id, or one image file listed twice.

    Example:
        >>> items = [{"image": "/d/siteA/case1.nii.gz", "id": "case1"},
        ...          {"image": "/d/siteB/case1.nii.gz", "id": "case1"}]
        >>> [it["id"] for it in unique_ids(items, [False, False], "dataset.json")]
        ['siteA/case1', 'siteB/case1']
        >>> unique_ids([{"image": "/d/a.nii.gz", "id": "p1"}, {"image": "/d/b.nii.gz", "id": "p1"}],
        ...            [True, True], "dataset.json")
        Traceback (most recent call last):
        ...
        medrobust.data.io.DataError: dataset.json: case id 'p1' is given to 2 entries; ids must be unique
    """
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item["id"], []).append(i)
    for case, members in groups.items():
        if len(members) == 1:
            continue
        if any(explicit[i] for i in members):
            raise DataError(f"{where}: case id {case!r} is given to {len(members)} entries; ids must be unique")
        paths = [_first_image(items[i]) for i in members]
        tails = _tails(paths, keep_suffix=False) or _tails(paths, keep_suffix=True)
        if tails is None:
            raise DataError(f"{where}: image {paths[0]} is listed {len(members)} times")
        for i, tail in zip(members, tails):
            items[i]["id"] = tail
    return items


def read_datalist_json(json_path: Path) -> dict[str, Any]:
    """The JSON object in ``json_path``; DataError naming it when missing, invalid or not an object."""
    if not json_path.is_file():
        raise DataError(f"{json_path}: datalist not found")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: expected a JSON object with 'training'/'validation'/'test' lists")
    return data


def _resolve(base: Path, value: Any, json_path: Path, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{json_path}: {what} must be a file path string, got {value!r}")
    path = Path(value)
    path = path if path.is_absolute() else (base / path)
    if not path.exists():
        raise DataError(f"{json_path}: {what} {path} not found")
    return str(path.resolve())


def load_decathlon(json_path: str | Path, split: str) -> list[dict[str, Any]]:
    """Items of one split of a Decathlon ``dataset.json``.

    Args:
        json_path: the ``dataset.json``.
        split: "training", "validation" or "test" (aliases "train", "val").

    Returns:
        ``[{"image": abs path (or list of abs paths), "label": abs path | None, "id": str}]``.

    Raises:
        DataError: unknown split, missing or empty split list, malformed entries or files
            that do not exist (the message names the JSON and the split).
    """
    json_path = Path(json_path)
    key = SPLIT_ALIASES.get(split, split)
    if key not in SPLITS:
        raise DataError(f"unknown split {split!r} for {json_path}; allowed: {', '.join(SPLITS)}")
    data = read_datalist_json(json_path)
    if "file_ending" in data and not any(k in data for k in SPLITS):
        raise DataError(f"{json_path}: an nnU-Net v2 raw dataset.json (it has 'file_ending' and no "
                        "'training' list); read it with medrobust.data.nnunet_raw.load_datalist")
    entries = data.get(key)
    if not entries:
        raise DataError(f"{json_path}: split {key!r} is missing or empty; a non-empty list of "
                        "{\"image\": ..., \"label\": ...} entries is needed")
    if not isinstance(entries, list):
        raise DataError(f"{json_path}: split {key!r} must be a list, got {type(entries).__name__}")
    base = json_path.resolve().parent
    items: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if isinstance(entry, str):  # MSD: "test": ["./imagesTs/x.nii.gz", ...]
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{json_path}: {where} must be a path or an object with an 'image' key, got {entry!r}")
        image = entry["image"]
        if isinstance(image, list):
            if not image:
                raise DataError(f"{json_path}: {where}.image is an empty list")
            resolved: str | list[str] = [_resolve(base, p, json_path, f"{where}.image") for p in image]
            first = image[0]
        else:
            resolved = _resolve(base, image, json_path, f"{where}.image")
            first = image
        label = entry.get("label")
        items.append({
            "image": resolved,
            "label": _resolve(base, label, json_path, f"{where}.label") if label is not None else None,
            "id": str(entry.get("id") or case_id(first)),
        })
    return unique_ids(items, [bool(e.get("id")) if isinstance(e, dict) else False for e in entries],
                      f"{json_path} split {key!r}")


def load_decathlon_labels(json_path: str | Path) -> list[str]:
    """Class names from ``labels``: ``{"0": "background", ...}``, a list, or nnU-Net's ``{"background": 0, ...}``.

    Args:
        json_path: the Decathlon ``dataset.json``.

    Returns:
        The class names by label value 0..K-1.

    Raises:
        DataError: no ``labels`` entry, a key that is not an index, or indices that are not
            exactly 0..K-1 (a gap such as {0, 1, 2, 4} would shift the names); nnU-Net
            region-based labels or an ``ignore`` label.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "dataset.json"
        >>> _ = path.write_text(json.dumps({"labels": {"1": "liver", "0": "background"}}))
        >>> load_decathlon_labels(path)
        ['background', 'liver']
        >>> _ = path.write_text(json.dumps({"labels": {"background": 0, "tumour": 2, "liver": 1}}))  # nnU-Net v2
        >>> load_decathlon_labels(path)
        ['background', 'liver', 'tumour']
        >>> _ = path.write_text(json.dumps({"labels": {"0": "bg", "1": "a", "2": "b", "4": "c"}}))
        >>> load_decathlon_labels(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medrobust.data.io.DataError: ...dataset.json: 'labels' keys must be consecutive ... missing [3]
    """
    json_path = Path(json_path)
    labels = read_datalist_json(json_path).get("labels")
    if isinstance(labels, list) and labels:
        return [str(v) for v in labels]
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{json_path}: no 'labels' entry (e.g. {{\"0\": \"background\", \"1\": \"organ\"}})")
    if all(not str(k).strip().isdigit() for k in labels):  # nnU-Net v2: name -> value
        if any(not isinstance(v, int) for v in labels.values()):
            raise DataError(f"{json_path}: 'labels' maps names to regions ({labels}); region-based nnU-Net labels are "
                            "not supported, give one integer value per class")
        if "ignore" in labels:
            raise DataError(f"{json_path}: 'labels' has an 'ignore' label; nnU-Net's ignore label is not supported")
        if len(set(labels.values())) != len(labels):
            raise DataError(f"{json_path}: 'labels' gives one value to several names ({labels})")
        labels = {str(v): k for k, v in labels.items()}
    bad = [k for k in labels if not str(k).strip().isdigit()]
    if bad:
        raise DataError(f"{json_path}: 'labels' key {bad[0]!r} is not a class index; keys must be 0..K-1, "
                        f"got {list(labels)}")
    indexed = {int(k): str(v) for k, v in labels.items()}
    gaps = sorted(set(range(max(indexed) + 1)) - set(indexed))
    if gaps or len(indexed) != len(labels):
        raise DataError(f"{json_path}: 'labels' keys must be consecutive class indices 0..K-1 (one name per "
                        f"output channel), got {sorted(indexed)}; missing {gaps or 'none (a key repeats)'}")
    return [indexed[k] for k in range(len(indexed))]


def load_class_folders(root: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """2D classification set laid out as ``root/<class>/*.png|jpg|jpeg``.

    Class names are the sub-folder names in sorted order; label ``k`` is the k-th name.
    Hidden folders are ignored.

    Returns:
        (items ``[{"image": abs path, "label": int, "id": "<class>/<file stem>"}]``, class_names)

    Raises:
        DataError: missing root, fewer than two class folders, or a class folder without
            images (the message names the folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: class-folder dataset not found (expected root/<class>/*.png)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folder(s) {classes}; a classification set needs >= 2")
    items: list[dict[str, Any]] = []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_2D_SUFFIXES)
        if not files:
            raise DataError(f"{root / name}: class folder has no images ({', '.join(IMAGE_2D_SUFFIXES)})")
        items += [{"image": str(p.resolve()), "label": k, "id": f"{name}/{case_id(p)}"} for p in files]
    return unique_ids(items, [False] * len(items), str(root)), classes


def load_classification_csv(csv_path: str | Path, split: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Classification set listed in a CSV with columns ``image,label`` (``id``, ``split`` optional).

    Labels may be class names (classes = sorted unique names) or integers 0..K-1 (classes =
    "0".."K-1"). Relative image paths are resolved against the CSV's folder. With ``split``
    given, only rows whose ``split`` column equals it are kept (the class list still comes
    from all rows, so indices agree between splits).

    Returns:
        (items ``[{"image": abs path, "label": int, "id": str}]``, class_names)

    Raises:
        DataError: missing file or columns, empty (split of the) list, missing images.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV datalist not found")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; required: image,label (found {columns})")
    if split is not None and "split" not in columns:
        raise DataError(f"{csv_path}: split {split!r} requested but the CSV has no 'split' column")
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    raw = [r["label"].strip() for r in rows]
    if all(v.lstrip("-").isdigit() for v in raw):
        labels = [int(v) for v in raw]
        if min(labels) < 0:
            raise DataError(f"{csv_path}: integer labels must be >= 0, got {min(labels)}")
        classes = [str(k) for k in range(max(labels) + 1)]
    else:
        classes = sorted(set(raw))
        labels = [classes.index(v) for v in raw]
    base = csv_path.resolve().parent
    items, explicit = [], []
    for i, (row, lab) in enumerate(zip(rows, labels)):
        if split is not None and row.get("split", "").strip() != split:
            continue
        image = _resolve(base, row["image"].strip(), csv_path, f"row {i + 2} image")
        given = (row.get("id") or "").strip()
        items.append({"image": image, "label": lab, "id": given or case_id(image)})
        explicit.append(bool(given))
    if not items:
        raise DataError(f"{csv_path}: split {split!r} has no rows")
    return unique_ids(items, explicit, str(csv_path)), classes


def save_decathlon(root: str | Path, splits: dict[str, list[dict[str, Any]]], class_names: Sequence[str],
                   affine: np.ndarray, *, name: str, description: str, modality: str = "MRI") -> Path:
    """Write a Decathlon folder: NIfTI files plus ``dataset.json`` (written last, atomically).

    Args:
        root: the folder to write (created).
        splits: ``{"training"|"validation"|"test": [{"id": str, "image": float32 (X, Y, Z),
            "label": int (X, Y, Z) | None}]}``; training and validation go to
            ``imagesTr``/``labelsTr``, test to ``imagesTs``/``labelsTs``.
        class_names: names of labels 0..K-1.
        affine: (4, 4) voxel-to-world affine (mm) shared by all volumes.
        name: the dataset's name in ``dataset.json``.
        description: its description there.
        modality: the modality of channel 0 (default "MRI").

    Returns:
        the path of ``dataset.json``.
    """
    root = Path(root)
    doc: dict[str, Any] = {"name": name, "description": description, "tensorImageSize": "3D",
                           "modality": {"0": modality}, "labels": {str(k): n for k, n in enumerate(class_names)}}
    for split in SPLITS:
        tag = "Ts" if split == "test" else "Tr"
        entries = []
        for case in splits.get(split, []):
            entry = {"image": f"./images{tag}/{case['id']}.nii.gz"}
            write_nifti(root / entry["image"], case["image"], affine, dtype=np.float32)
            if case.get("label") is not None:
                entry["label"] = f"./labels{tag}/{case['id']}.nii.gz"
                write_nifti(root / entry["label"], case["label"], affine, dtype=np.uint8)
            entries.append(entry)
        doc[split] = entries
    doc["numTraining"], doc["numTest"] = len(doc["training"]) + len(doc["validation"]), len(doc["test"])
    return write_json_atomic(root / "dataset.json", doc)
