"""Soundness on the demo architectures and data, at a small scale: PGD-L2 at 0.9x the certified
radius never changes a certified prediction of the noise-trained demo segmenter (3D UNet of
``medrobust.demo`` on MNI152 volumes) or demo classifier (half-width resnet18 on lesion slices).
The full-scale run is examples/certify_soundness.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import medrobust.training.noise_recipe  # noqa: F401  (registers gaussian_noise)
from medrobust.certify import Smoothed
from medrobust.data.demo import build_demo_classification, build_demo_segmentation
from medrobust.demo import DEMO_MODEL, DEMO_MODEL_KWARGS, DEMO_TRAIN
from medrobust.evaluation.loading import load_model
from medrobust.evaluation.soundness import SoundnessCounts, check_soundness
from medrobust.training import TrainConfig, train_model

SIGMA = 0.25  # model units: z-score (segmenter), grey level / 255 (classifier)
NOISE: dict[str, Any] = {"recipe": "gaussian_noise", "recipe_params": {"sigma": SIGMA, "unit": "model"}}


def _check(checkpoint: Path, data: Path, tau: float | None) -> SoundnessCounts:
    lm = load_model(checkpoint, data, "test")
    smoothed = Smoothed(lm.model, SIGMA, batch_size=50, seed=0)
    images = [lm.split.dataset[i]["image"][None] for i in range(len(lm.split.dataset))]
    counts = check_soundness(lm.model, smoothed, images, n0=10, n=100, alpha=0.001, tau=tau, draws=4, steps=5)
    print(counts.report())
    return counts


@pytest.mark.slow
def test_pgd_below_the_radius_never_changes_a_certified_voxel_of_the_demo_segmenter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = build_demo_segmentation(tmp_path / "data", n_train=2, n_val=1, n_test=1)
    result = train_model(data, DEMO_MODEL, tmp_path / "run", model_kwargs=DEMO_MODEL_KWARGS,
                         config=DEMO_TRAIN.model_copy(update={"epochs": 3}), progress=False, restart=True, **NOISE)
    counts = _check(result.checkpoint, data, tau=0.75)
    assert counts.kind == "segmenter" and counts.cases == 1 and counts.certified > 0
    assert counts.protected == counts.certified and counts.max_ratio <= 0.9 + 1e-5
    assert counts.violations == 0


@pytest.mark.slow
def test_pgd_below_the_radius_never_changes_a_certified_class_of_the_demo_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = build_demo_classification(tmp_path / "data", n_train=16, n_val=4, n_test=6, size=32)
    result = train_model(data, "resnet18", tmp_path / "run", model_kwargs={"widen_factor": 0.5},
                         normalization="minmax:0,255", config=TrainConfig(epochs=2, batch_size=8, lr=3e-3, seed=0),
                         progress=False, restart=True, **NOISE)
    counts = _check(result.checkpoint, data, tau=None)
    assert counts.kind == "classifier" and counts.cases == 6 and counts.certified > 0
    assert counts.max_ratio <= 0.9 + 1e-5
    assert counts.violations == 0
