"""Builders of tiny bad inputs for the reliability tests (issue 21): Decathlon folders whose
ids, paths or labels a test chooses, a random tiny UNet checkpoint, and a grid YAML.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from medrobust.data.io import write_nifti
from medrobust.data.phantoms import phantom_segmentation
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model

CLASSES = ["background", "a", "b"]
SHAPE = (16, 16, 8)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])

Case = dict[str, Any]
MakeData = Callable[..., Path]


def files_outside(root: Path, out: Path, before: set[Path]) -> list[Path]:
    """Files under ``root`` that are new since ``before`` and not under ``out``."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p not in before and out not in p.parents)


@pytest.fixture()
def make_data(tmp_path: Path) -> MakeData:
    """``make_data(cases, labels=...)``: a Decathlon folder; each case is ``{"image": rel path,
    "label": rel path, "id": optional id, "label_array": optional array}``; returns dataset.json.
    """

    def make(cases: list[Case], labels: dict[str, str] | None = None, root: Path | None = None) -> Path:
        root = root or tmp_path / "data"
        image, label = phantom_segmentation(SHAPE, seed=3, batch=len(cases))
        entries = []
        for i, case in enumerate(cases):
            write_nifti(root / case["image"], (100 * image[i, 0] + 50).numpy(), AFFINE)
            lab = case.get("label_array", label[i, 0].numpy())
            write_nifti(root / case["label"], lab, case.get("label_affine", AFFINE), dtype=np.int16)
            entries.append({k: case[k] for k in ("image", "label", "id") if k in case})
        doc = {"name": "tiny", "labels": labels or {str(k): n for k, n in enumerate(CLASSES)},
               "training": entries, "validation": entries, "test": entries}
        (root / "dataset.json").write_text(json.dumps(doc))
        return root / "dataset.json"

    return make


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A random tiny 3D UNet (3 classes) saved as model.json + model.safetensors."""
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                      num_res_units=0)
    return save_checkpoint(tmp_path / "ckpt", net, classes=CLASSES, extra={"normalization": "zscore"})


def write_grid(folder: Path, checkpoint: Path, datalist: Path, **extra: Any) -> Path:
    """A one-attack grid YAML (FGSM at one eps) in ``folder``; ``extra`` overrides keys."""
    cfg: dict[str, Any] = {"models": [{"name": "tiny", "checkpoint": str(checkpoint)}],
                           "data": {"datalist": str(datalist), "split": "test"},
                           "perturbations": [{"attack": "fgsm", "eps": [4], "eps_unit": "1/255"}],
                           "out": str(folder / "results"), "examples": 1, "masking_check": False, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
