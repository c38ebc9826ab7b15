"""Soundness: PGD-L2 below the certified radius never changes a certified prediction of a small
noise-trained classifier and segmenter (trained here in seconds with the gaussian_noise recipe).
The check itself is :func:`medrobust.evaluation.soundness.check_soundness`; the demo models' version
is tests/certify/test_soundness_demo.py."""
from __future__ import annotations

import pytest
import torch

from medrobust.certify import Smoothed
from medrobust.evaluation.soundness import check_soundness
from medrobust.training.noise_recipe import GaussianNoiseTraining
from medrobust.training.recipes import StepInfo
from tests.training.tiny import BlobSegmentation, StripeClassification, tiny_unet

SIGMA = 0.25  # model units


def _train(model: torch.nn.Module, data: BlobSegmentation | StripeClassification, steps: int) -> torch.nn.Module:
    recipe, opt = GaussianNoiseTraining(sigma=SIGMA, unit="model"), torch.optim.Adam(model.parameters(), lr=1e-2)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([item["image"] for item in items])
    labels = torch.stack([torch.as_tensor(item["label"]) for item in items])
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (8,), generator=g)
        loss, _ = recipe.batch_loss(model, images[idx], labels[idx], StepInfo(0, step, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _classifier() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))


@pytest.mark.slow
def test_pgd_below_the_radius_never_changes_a_certified_class() -> None:
    torch.manual_seed(0)
    model = _train(_classifier(), StripeClassification(32), steps=120)
    test = StripeClassification(8, seed=9)
    smoothed = Smoothed(model, SIGMA, batch_size=250, seed=1)
    images = [test[i]["image"][None] for i in range(len(test))]
    counts = check_soundness(model, smoothed, images, n0=50, n=500, alpha=0.001, draws=16, steps=20)
    print(counts.report())
    assert counts.max_ratio <= 0.9 + 1e-5
    assert counts.certified >= len(test) // 2 and counts.protected == counts.certified
    assert counts.violations == 0


@pytest.mark.slow
def test_pgd_below_the_radius_never_changes_a_certified_voxel() -> None:
    torch.manual_seed(0)
    model = _train(tiny_unet(norm=None), BlobSegmentation(32), steps=150)
    smoothed = Smoothed(model, SIGMA, batch_size=100, seed=1)
    # the same attack at 8x the radius does change certified voxels: the check can see a change
    test = BlobSegmentation(4, seed=9)
    images = [test[i]["image"][None] for i in range(len(test))]
    counts = check_soundness(model, smoothed, images, n0=30, n=300, alpha=0.001, tau=0.75, far=(8,), draws=8, steps=20)
    print(counts.report())
    assert counts.max_ratio <= 0.9 + 1e-5
    assert counts.certified > 0 and counts.changed_far[8] > 0
    assert counts.violations == 0
