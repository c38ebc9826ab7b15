"""Epoch time of every training recipe relative to `standard`, beside the number of
forward+backward passes the recipe needs per batch (design.md section 6).

    .venv/bin/python benchmarks/training_cost.py [--size 32] [--cases 8] [--threads 2]

The ratio (epoch time / epoch time of `standard` on the same network: the registry UNet, or
the cooperative FTN+STN) divided by the pass count is the waste factor: 1.0 means the recipe
costs exactly its passes; the goal is <= 1.15.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from medrobust.data.phantoms import phantom_segmentation
from medrobust.models.registry import build_model
from medrobust.training import TrainConfig, build_recipe, fit

UNET = ("unet", {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1})
COOPERATIVE = ("cooperative", {})
# label -> (recipe, parameters, network). Small attack budgets so a run takes seconds; the
# pass count scales with them. Each ratio is against `standard` on the same network.
RUNS: dict[str, tuple[str, dict[str, Any], tuple[str, dict[str, Any]]]] = {
    "pgd_at": ("pgd_at", {"eps": 4, "steps": 3}, UNET),
    "trades": ("trades", {"eps": 4, "steps": 3}, UNET),
    "fast_at": ("fast_at", {"eps": 4}, UNET),
    "free_at": ("free_at", {"eps": 4, "replays": 3}, UNET),
    # check_every beyond the run keeps the schedule at 1 iteration, so the pass count is fixed
    "self_adaptive": ("self_adaptive", {"eps": 4, "check_every": 100}, UNET),
    "vaft": ("vaft", {"steps": 3, "block_size": (8, 8, 8)}, UNET),
    "cooperative (masking none)": ("cooperative", {"masking": "none"}, COOPERATIVE),
    "cooperative": ("cooperative", {}, COOPERATIVE),
}


class Cases(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        x, y = phantom_segmentation((size, size, size), num_classes=3, seed=0, batch=n)
        self.items = [{"image": x[i], "label": y[i], "id": str(i), "meta": {}} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def epoch_seconds(recipe_name: str, params: dict[str, Any], network: tuple[str, dict[str, Any]], data: Cases,
                  val: Cases, epochs: int) -> tuple[float, float]:
    """Median epoch time (seconds, after the first epoch) and passes per batch."""
    arch, kw = network
    model = build_model(arch, spatial_dims=3, in_channels=1, out_channels=3, **kw)
    recipe = build_recipe(recipe_name, **params)
    cfg = TrainConfig(epochs=epochs, batch_size=2, val_every=10_000, scheduler="none")
    times: list[float] = []
    original = recipe.on_epoch_end

    def timed(epoch: int, logs: dict[str, float]) -> dict[str, float]:
        times.append(time.perf_counter())
        return original(epoch, logs)

    recipe.on_epoch_end = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(model, recipe, data, val, cfg, tmp, classes=["bg", "a", "b"], progress=False)
    stamps = [start] + times
    per_epoch = sorted(b - a for a, b in zip(stamps[1:-1], stamps[2:]))  # drop the warm-up epoch
    return per_epoch[len(per_epoch) // 2], float(recipe.passes_per_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="phantom volume edge (voxels)")
    parser.add_argument("--cases", type=int, default=8, help="training cases per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per recipe (first is warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated labels of: {', '.join(RUNS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, val = Cases(args.cases, args.size), Cases(1, args.size)
    baselines: dict[str, float] = {}
    print(f"{'run':<27}{'network':<13}{'epoch s':>9}{'ratio':>8}{'passes':>8}{'ratio/passes':>14}")
    for label in args.runs.split(","):
        recipe, params, network = RUNS[label]
        if network[0] not in baselines:
            baselines[network[0]], _ = epoch_seconds("standard", {}, network, data, val, args.epochs)
            print(f"{'standard':<27}{network[0]:<13}{baselines[network[0]]:>9.3f}{1:>8.2f}{1:>8}{1:>14.2f}")
        seconds, passes = epoch_seconds(recipe, params, network, data, val, args.epochs)
        ratio = seconds / baselines[network[0]]
        print(f"{label:<27}{network[0]:<13}{seconds:>9.3f}{ratio:>8.2f}{passes:>8.0f}{ratio / passes:>14.2f}",
              flush=True)


if __name__ == "__main__":
    main()
