"""nnU-Net v2 raw datasets (``nnUNet_raw/DatasetXXX_Name``) as datalists.

Layout read::

    dataset.json        {"channel_names": {"0": "CT", ...}, "labels": {"background": 0, ...},
                         "numTraining": N, "file_ending": ".nii.gz"}  (optional "dataset":
                         {case: {"images": [...], "label": ...}} instead of the folders)
    imagesTr/CASE_0000<file_ending>   one file per channel: _0000, _0001, ...
    labelsTr/CASE<file_ending>
    imagesTs/CASE_0000<file_ending>   optional; labelsTs/CASE<file_ending> optional
    splits_final.json   optional: [{"train": [...], "val": [...]}, ...] (one entry per fold,
                        as nnU-Net writes it to nnUNet_preprocessed/DatasetXXX/)

Split names: ``"train"`` and ``"val"`` are fold 0 of ``splits_final.json`` (``"train:K"``,
``"val:K"`` fold K); without that file ``"train"`` is every training case and ``"val"`` is
an error saying where the file comes from. ``"test"`` is ``imagesTs/``. ``"training"`` and
``"validation"`` are accepted as aliases. Items have the Decathlon form
(``{"image": [channel paths], "label": path | None, "id": CASE}``), so the rest of
:mod:`medrobust.data` treats both alike. Region-based labels and an ``ignore`` label are
refused with a message (the model's outputs would not be one class per label value).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medrobust.data.datalists import load_decathlon, read_datalist_json
from medrobust.data.io import DataError

__all__ = ["is_nnunet_raw", "load_datalist", "load_nnunet_raw"]

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}


def is_nnunet_raw(doc: dict[str, Any]) -> bool:
    """Whether a parsed ``dataset.json`` is nnU-Net v2's raw form (``file_ending``, no Decathlon lists).

    Example:
        >>> is_nnunet_raw({"channel_names": {"0": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"})
        True
        >>> is_nnunet_raw({"labels": {"0": "background"}, "training": []})
        False
    """
    return "file_ending" in doc and not any(k in doc for k in ("training", "validation", "test"))


def _channels(doc: dict[str, Any], json_path: Path) -> int:
    names = doc.get("channel_names", doc.get("modality"))
    if not isinstance(names, dict) or not names:
        raise DataError(f"{json_path}: nnU-Net dataset.json needs 'channel_names' (e.g. {{\"0\": \"CT\"}})")
    if sorted(names) != [str(k) for k in range(len(names))]:
        raise DataError(f"{json_path}: 'channel_names' keys must be 0..C-1, got {sorted(names)}")
    return len(names)


def _folder_cases(folder: Path, ending: str, channels: int, json_path: Path) -> dict[str, list[str]]:
    """``{case: [channel files]}`` of ``imagesTr``/``imagesTs`` (CASE_XXXX<ending>)."""
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    found: dict[str, set[int]] = {}
    for f in folder.iterdir():
        match = pattern.match(f.name)
        if match and f.is_file():
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    cases = {}
    for case in sorted(found):
        missing = sorted(set(range(channels)) - found[case])
        if missing or max(found[case]) >= channels:
            want = folder / f"{case}_{(missing or [max(found[case])])[0]:04d}{ending}"
            raise DataError(f"{want}: {'missing' if missing else 'unexpected'}: {json_path} declares {channels} "
                            f"channel(s) (_0000.._{channels - 1:04d}), case {case!r} has {sorted(found[case])}")
        cases[case] = [str((folder / f"{case}_{k:04d}{ending}").resolve()) for k in range(channels)]
    return cases


def _training_items(doc: dict[str, Any], root: Path, json_path: Path) -> dict[str, dict[str, Any]]:
    ending, channels = str(doc["file_ending"]), _channels(doc, json_path)
    cases: dict[str, dict[str, Any]]
    if isinstance(doc.get("dataset"), dict):  # nnU-Net v2's explicit file lists, relative to the dataset folder
        bad = [c for c, e in doc["dataset"].items() if not (isinstance(e, dict) and isinstance(e.get("images"), list)
                                                            and isinstance(e.get("label"), str))]
        if bad:
            raise DataError(f"{json_path}: 'dataset' entry {bad[0]!r} must be {{\"images\": [paths], \"label\": path}}")
        cases = {str(c): {"image": [str((root / p).resolve()) for p in e["images"]],
                          "label": str((root / e["label"]).resolve())} for c, e in doc["dataset"].items()}
    else:
        if not (root / "imagesTr").is_dir():
            raise DataError(f"{root / 'imagesTr'}: folder missing; an nnU-Net raw dataset keeps its training images "
                            "there (CASE_0000" + ending + ")")
        cases = {c: {"image": files, "label": str((root / "labelsTr" / f"{c}{ending}").resolve())}
                 for c, files in _folder_cases(root / "imagesTr", ending, channels, json_path).items()}
    for case, entry in cases.items():
        for path in [*entry["image"], entry["label"]]:
            if not Path(path).exists():
                raise DataError(f"{path}: not found (case {case!r} of {json_path})")
    declared = doc.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise DataError(f"{json_path}: numTraining is {declared} but {len(cases)} training case(s) were found")
    return cases


def _fold(root: Path, json_path: Path, fold: int, part: str, cases: dict[str, Any]) -> list[str]:
    path = root / "splits_final.json"
    if not path.is_file():
        raise DataError(f"{json_path}: split {part!r} needs {path} (nnU-Net writes it to nnUNet_preprocessed/"
                        "DatasetXXX/splits_final.json; copy it there), or use split 'train' for every training case")
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
        names = [str(c) for c in folds[fold][part]]
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise DataError(f"{path}: no fold {fold} with a {part!r} list (expected [{{\"train\": [...], \"val\": [...]}}, "
                        f"...]; {type(e).__name__}: {e})") from e
    unknown = [c for c in names if c not in cases]
    if unknown:
        raise DataError(f"{path}: fold {fold} {part!r} names case(s) not in the dataset: {unknown[:5]}")
    return names


def load_nnunet_raw(json_path: str | Path, split: str) -> list[dict[str, Any]]:
    """Items of one split of an nnU-Net v2 raw dataset (split names: see the module docstring).

    Args:
        json_path: the dataset's ``dataset.json``.
        split: ``"train"``, ``"val"``, ``"test"``, or ``"train:K"``/``"val:K"`` for fold K.

    Returns:
        ``[{"image": [abs channel paths], "label": abs path | None, "id": CASE}]``.

    Raises:
        DataError: an unknown split, a missing channel or label file, ``numTraining`` not
            matching, no ``splits_final.json`` (or no such fold) for ``"val"``, no
            ``imagesTs`` for ``"test"``.
    """
    json_path = Path(json_path)
    doc, root = read_datalist_json(json_path), json_path.resolve().parent
    name, _, fold_text = split.partition(":")
    part = SPLIT_NAMES.get(name)
    if part is None or (fold_text and (part == "test" or not fold_text.isdigit())):
        raise DataError(f"unknown split {split!r} for nnU-Net dataset {json_path}; allowed: train, val, test, "
                        "train:K, val:K (fold K of splits_final.json)")
    ending = str(doc["file_ending"])
    if part == "test":
        folder = root / "imagesTs"
        if not folder.is_dir():
            raise DataError(f"{folder}: folder missing; split 'test' of an nnU-Net raw dataset is imagesTs/")
        items: list[dict[str, Any]] = []
        for case, files in _folder_cases(folder, ending, _channels(doc, json_path), json_path).items():
            label = root / "labelsTs" / f"{case}{ending}"
            items.append({"image": files, "label": str(label.resolve()) if label.exists() else None, "id": case})
        if not items:
            raise DataError(f"{folder}: no images named CASE_0000{ending}")
        return items
    cases = _training_items(doc, root, json_path)
    if part == "train" and not fold_text and not (root / "splits_final.json").is_file():
        names = list(cases)  # no folds given: every training case
    else:
        names = _fold(root, json_path, int(fold_text or 0), part, cases)
    if not names:
        raise DataError(f"{json_path}: split {split!r} has no cases")
    return [{"image": cases[c]["image"], "label": cases[c]["label"], "id": c} for c in names]


def load_datalist(json_path: str | Path, split: str) -> list[dict[str, Any]]:
    """Items of ``split`` of a ``dataset.json`` in either form: Decathlon or nnU-Net v2 raw.

    Args:
        json_path: the ``dataset.json``.
        split: a split name of the form (Decathlon: ``training``/``validation``/``test``
            and ``train``/``val``; nnU-Net: see :func:`load_nnunet_raw`).

    Returns:
        Datalist items (see :mod:`medrobust.data.datalists`).
    """
    if is_nnunet_raw(read_datalist_json(Path(json_path))):
        return load_nnunet_raw(json_path, split)
    return load_decathlon(json_path, split)

