"""Test helper: a phantom Decathlon set and a tiny untrained 3D UNet checkpoint, for grid and CLI tests."""
from __future__ import annotations

from pathlib import Path

import torch

from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model


def tiny_grid_assets(root: Path, n_test: int = 2) -> dict[str, Path]:
    """16³ phantoms (1 train, 1 val, ``n_test`` test cases) and a seeded 2-level UNet saved as ``ckpt/model.json``."""
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=1, n_val=1, n_test=n_test)
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,),
                      num_res_units=0)
    ckpt = save_checkpoint(root / "ckpt", net, classes=["background", "class1", "class2"],
                           extra={"normalization": "zscore"})
    return {"datalist": data / "dataset.json", "checkpoint": ckpt}
