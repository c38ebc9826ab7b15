"""Natural-photograph pretext data: offline photographs, patches and labels that decompose."""
from __future__ import annotations

import torch

from medrobust.training.pretrain import PHOTOS, load_photos, sample_patches


def test_patches_and_labels() -> None:
    photos = load_photos(32)
    assert len(photos) == len(PHOTOS) and all(p.shape[0] == 3 and min(p.shape[1:]) == 32 for p in photos)
    assert all(0.0 <= float(p.min()) and float(p.max()) <= 1.0 for p in photos)
    x, y = sample_patches(photos, 16, 8, "both", torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 8, 8) and int(y.max()) < 4 * len(PHOTOS)
    _, y_rot = sample_patches(photos, 16, 8, "rotation", torch.Generator().manual_seed(0))
    _, y_photo = sample_patches(photos, 16, 8, "photo", torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, y_photo * 4 + y_rot)  # same draws, so the labels decompose
