"""Files the grid writes beside the store: example slices (``.npz``) and adversarial NIfTI.

The grid keeps, per model, the ``k`` cases whose worst run lowered the score the most
(``drop = clean_score - adv_score``; for classifiers plus a small term for the fall of the
true-class probability so ties break by confidence). For each such run it saves one 2D
slice (the slice of a volume holding the most foreground in the label, else the central
one) with the clean and adversarial image, both predictions and the label. Files are
plain numeric/str arrays written with ``np.savez_compressed`` and read back with
``allow_pickle=False``. The report picks the same runs from the store (``select_examples``).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrobust.units import IntensityMap

EXAMPLES_DIR = "examples"


def example_name(model: str, perturbation: str, eps: float, case_id: str) -> str:
    """File name of a run's example: readable slug + short hash of the exact key."""
    key = f"{model}\x1f{perturbation}\x1f{eps!r}\x1f{case_id}"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{model}_{perturbation}_{eps:g}_{case_id}").strip("-")[:80]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.npz"


def drop_of(row: dict[str, Any] | pd.Series) -> float:
    """How much a run hurt: clean minus adversarial score (+ 1e-3 x probability drop)."""
    drop = float(row["clean_score"]) - float(row["adv_score"])
    cp, ap = row.get("clean_prob"), row.get("adv_prob")
    if cp is not None and ap is not None and not (pd.isna(cp) or pd.isna(ap)):
        drop += 1e-3 * (float(cp) - float(ap))
    return drop


def _top(cases: dict[str, tuple[float, str]], k: int) -> set[str]:
    ranked = sorted(cases.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return {case for case, _ in ranked[:k]}


def select_examples(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per model the ``k`` cases with the largest drop, each with its worst run (store order).

    Adds columns ``drop`` and ``example`` (file name); rows sorted by model, drop.
    """
    if df.empty or k <= 0:
        return df.iloc[0:0].assign(drop=[], example=[])
    d = df.assign(drop=[drop_of(r) for _, r in df.iterrows()])
    worst = d.loc[d.groupby(["model", "case_id"], sort=False)["drop"].idxmax()]
    worst = worst.sort_values(["model", "drop", "case_id"], ascending=[True, False, True])
    worst = worst.groupby("model", sort=True).head(k)
    names = [example_name(r["model"], r["perturbation"], float(r["eps_stated"]), r["case_id"]) for _, r in worst.iterrows()]
    return worst.assign(example=names)


class ExampleKeeper:
    """Decides, run by run, which example files to keep so each model has its ``k`` worst.

    ``wants`` before saving, ``accept`` after the row is in the store (it deletes files
    that fell out). Initialised from the rows already stored, so a resumed grid agrees with
    :func:`select_examples`.
    """

    def __init__(self, folder: Path, k: int, stored: pd.DataFrame | None = None) -> None:
        self.folder, self.k = Path(folder), k
        self.worst: dict[str, dict[str, tuple[float, str]]] = {}
        for _, r in (stored if stored is not None else pd.DataFrame()).iterrows():
            self._record(r["model"], r["case_id"], drop_of(r),
                         example_name(r["model"], r["perturbation"], float(r["eps_stated"]), r["case_id"]))

    def _record(self, model: str, case: str, drop: float, name: str) -> tuple[float, str] | None:
        cases = self.worst.setdefault(model, {})
        old = cases.get(case)
        if old is None or drop > old[0]:
            cases[case] = (drop, name)
        return old

    def wants(self, model: str, case: str, drop: float) -> bool:
        """True when a run with this drop becomes one of the model's ``k`` worst cases."""
        cases = dict(self.worst.get(model, {}))
        if self.k <= 0 or (case in cases and drop <= cases[case][0]):
            return False
        cases[case] = (drop, "")
        return case in _top(cases, self.k)

    def accept(self, model: str, case: str, drop: float, name: str) -> None:
        """Record a stored run; delete example files no longer among the ``k`` worst."""
        old = self._record(model, case, drop, name)
        if old is not None and self.worst[model][case][1] != old[1]:
            (self.folder / old[1]).unlink(missing_ok=True)
        keep = _top(self.worst[model], self.k)
        for c, (_, n) in self.worst[model].items():
            if c not in keep:
                (self.folder / n).unlink(missing_ok=True)


def slice_index(label: np.ndarray) -> int:
    """Index along the last axis of a 3D label (D, H, W) with the most foreground voxels."""
    fg = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else label.shape[-1] // 2


def _plane(a: np.ndarray, spatial_dims: int, idx: int | None) -> np.ndarray:
    """(C, *spatial) or (*spatial) -> a 2D plane (H, W), (H, W, C) for RGB images."""
    if spatial_dims == 3:
        a = a[..., idx]
    if a.ndim == 3:  # channels first
        a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    return a


def save_example(path: Path, *, image: np.ndarray, adversarial: np.ndarray, label: np.ndarray | int,
                 pred_clean: np.ndarray | int, pred_adv: np.ndarray | int, info: dict[str, Any]) -> Path:
    """Write one run's example slice atomically.

    Args:
        image, adversarial: (C, *spatial) float32 in model units (2D or 3D).
        label, pred_clean, pred_adv: (*spatial) integer maps (segmentation) or class ints.
        info: str/number fields kept beside (model, perturbation, eps, eps_unit, case_id,
            task, clean_score, adv_score, classes (list of str), low, high (valid range)).
    """
    spatial_dims = image.ndim - 1
    seg = np.ndim(label) > 0
    # 3D: the slice with the most labelled foreground, or the central one for a classified volume
    idx = (slice_index(np.asarray(label)) if seg else image.shape[-1] // 2) if spatial_dims == 3 else None
    arrays: dict[str, np.ndarray] = {
        "image": _plane(np.asarray(image, np.float32), spatial_dims, idx),
        "adversarial": _plane(np.asarray(adversarial, np.float32), spatial_dims, idx),
    }
    for key, value in (("label", label), ("pred_clean", pred_clean), ("pred_adv", pred_adv)):
        v = np.asarray(value, dtype=np.int16)
        arrays[key] = v[..., idx] if (seg and idx is not None) else v
    return write_npz(path, arrays, {**info, "slice": -1 if idx is None else idx})


def write_npz(path: Path, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Write ``arrays`` plus plain ``info`` values (stored as ``info_<key>``) atomically as a
    compressed npz; shared by example slices, corruption thumbnails and Grad-CAM panels."""
    from medrobust.data.io import atomic_path  # lazy: data is a sibling part

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, **{f"info_{k}": np.asarray(v) for k, v in info.items()})
    return path


def read_npz(path: Path) -> dict[str, Any]:
    """Read a :func:`write_npz` file (never unpickles): arrays plus ``info`` (plain Python values)."""
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files if not k.startswith("info_")}
        out["info"] = {k[5:]: z[k].tolist() for k in z.files if k.startswith("info_")}
    return out


def load_example(path: Path) -> dict[str, Any]:
    """Read an example file written by :func:`save_example`."""
    return read_npz(path)


def save_adversarial(out: Path, item: dict[str, Any], row: dict[str, Any], x: torch.Tensor,
                     x_adv: torch.Tensor, imap: IntensityMap) -> None:
    """Write a run's adversarial image as NIfTI in raw units, float32, + the folder's manifest.json.

    Path: ``out/adversarial/<model>/<perturbation>/eps<eps>/<case>.nii.gz``.

    When the case was not resampled, the image is the source scan plus the perturbation in
    raw units (source affine and header; intensities outside a CT window survive);
    otherwise the adversarial image mapped back to raw units on the dataset's grid.
    """
    from medrobust.data.io import read_nifti, write_json_atomic, write_nifti

    folder = out / "adversarial" / row["model"] / row["perturbation"] / f"eps{row['eps_stated']:g}"
    path = folder / f"{row['case_id']}.nii.gz"
    source = str(item["meta"]["source"])
    delta = (imap.model_to_raw(x_adv[0].double()) - imap.model_to_raw(x[0].double())).cpu().numpy()
    raw, meta = read_nifti(source) if source.endswith((".nii", ".nii.gz")) else (None, {})
    if raw is not None and raw.size == delta.size:
        image, affine, header = raw + delta.reshape(raw.shape), meta["affine"], meta.get("header")
    else:
        grid = item["meta"].get("grid_affine", item["meta"]["affine"])
        image = imap.model_to_raw(x_adv[0].double()).cpu().numpy()
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        affine, header = np.asarray(grid, dtype=np.float64), None
    write_nifti(path, image.astype(np.float32), affine, header=header, dtype=np.float32)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}}
    manifest.update({"model": row["model"], "attack": row["attack"], "options": json.loads(row["options_json"]),
                     "budget": {"norm": row["norm"], "eps": row["eps_stated"], "unit": row["eps_unit"]},
                     "units": "raw intensities of the source scan plus the perturbation mapped to raw units"})
    manifest["cases"][row["case_id"]] = {"image": path.name, "source": source,
                                         **{k: row[k] for k in ("linf_raw", "l2_raw", "linf_model", "l2_model")}}
    write_json_atomic(manifest_path, manifest)
