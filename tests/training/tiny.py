"""Tiny in-memory datasets and models for training-loop tests (seconds on 2 cores)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch.utils.data import Dataset

from medrobust.models.registry import build_model


class BlobSegmentation(Dataset):
    """2D images with a bright disc (class 1) on noise; label (1, H, W)."""

    def __init__(self, n: int, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.items = []
        for i in range(n):
            cy, cx = torch.randint(4, size - 4, (2,), generator=g).tolist()
            r = 2 + int(torch.randint(0, 3, (1,), generator=g))
            label = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).long()[None]
            image = label.float() + 0.3 * torch.randn(1, size, size, generator=g)
            self.items.append({"image": image, "label": label, "id": f"case{i}",
                               "meta": {"intensity": {"offset": 0.0, "scale": 1.0, "clip": None, "raw_unit": "raw"}}})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class StripeClassification(Dataset):
    """Class 0: horizontal stripes, class 1: vertical stripes, plus noise; images (1, 24, 24)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        wave = (torch.arange(24) % 4 < 2).float()
        self.items = []
        for i in range(n):
            stripes = (wave[:, None] if i % 2 == 0 else wave[None, :]).expand(24, 24)
            image = stripes + 0.2 * torch.randn(24, 24, generator=g)
            self.items.append({"image": image[None].clone(), "label": torch.tensor(i % 2), "id": f"c{i}", "meta": {}})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def tiny_unet(spatial_dims: int = 2, norm: str | None = "instance") -> torch.nn.Module:
    """A 2-level UNet. ``norm=None`` drops the instance norm, whose preceding conv biases get a
    zero gradient that Adam turns into float-noise-sized steps of size lr (bad for exact
    comparisons between runs that sum gradients in another order)."""
    return build_model("unet", spatial_dims=spatial_dims, in_channels=1, out_channels=2,
                       channels=(4, 8), strides=(2,), num_res_units=0, norm=norm)


ROOT = Path(__file__).resolve().parents[2]


def run_torchrun(script: Path, body: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Write ``body`` (dedented; the repository is put on sys.path and torch on one thread) to
    ``script`` and run it under ``torchrun --standalone --nproc_per_node 2`` (gloo on CPU)."""
    script.write_text(f"import sys, torch\nsys.path.insert(0, {str(ROOT)!r})\ntorch.set_num_threads(1)\n"
                      + textwrap.dedent(body))
    torchrun = Path(sys.executable).parent / "torchrun"
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), *args],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=timeout)
