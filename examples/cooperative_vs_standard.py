"""Cooperative training (seed 003) with latent masking off and on, beside a standard UNet.

Three models on the MNI152 demo segmentation set, same loop settings, epochs and seed:

- ``cooperative, masking off``: FTN + STN, the four standard terms only (the seed's baseline),
- ``cooperative, masking on``:  the same network with hard examples from masked latent codes,
- ``standard UNet``:            the demo's registry UNet with the ``standard`` recipe.

Printed on the test split (mean foreground Dice, background excluded): clean, mean over all
corruptions x severities 1-5 (``medrobust.corruptions``),
and under PGD and APGD at the demo budget, L-inf 4/255 of each case's intensity range.

    .venv/bin/python examples/cooperative_vs_standard.py [--epochs 30] [--out DIR] [--quick]

Reruns reuse finished runs under ``--out`` (the loop resumes from ``last/``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.attacks.registry import get_attack
from medrobust.corruptions import CORRUPTION_NAMES, corrupt
from medrobust.data.demo import build_demo_segmentation
from medrobust.data.sources import open_split
from medrobust.metrics import dice_per_class
from medrobust.models import build_model, load_checkpoint
from medrobust.models.inference import infer
from medrobust.training import TrainConfig, build_recipe, fit
from medrobust.units import IntensityMap, budget_for_case

DEMO_UNET = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}  # as `medrobust demo`
RUNS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {  # label: model, kwargs, recipe, params
    "cooperative, masking off": ("cooperative", {}, "cooperative", {"masking": "none"}),
    "cooperative, masking on": ("cooperative", {}, "cooperative", {"masking": "all"}),
    "standard UNet": ("unet", DEMO_UNET, "standard", {}),
}
EPS, EPS_UNIT = 4.0, "1/255"


def train_all(data: Path, out: Path, epochs: int) -> dict[str, Path]:
    """Train (or resume) every run; return label -> best checkpoint (model.json)."""
    train, val = open_split(data, "train"), open_split(data, "val")
    config = TrainConfig(epochs=epochs, batch_size=2, lr=3e-3, scheduler="cosine", seed=0)
    checkpoints = {}
    for label, (arch, kwargs, recipe, params) in RUNS.items():
        torch.manual_seed(0)
        model = build_model(arch, spatial_dims=train.spatial_dims, in_channels=train.in_channels,
                            out_channels=len(train.classes), **kwargs)
        run = out / label.replace(", ", "_").replace(" ", "_")
        print(f"training {label} -> {run}")
        result = fit(model, build_recipe(recipe, **params), train.dataset, val.dataset, config, run,
                     classes=train.classes, extra={"normalization": train.normalization})
        checkpoints[label] = result.checkpoint
    return checkpoints


def mean_dice(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    """Mean foreground Dice of ``model`` on one case x (1, C, *S), y (1, 1, *S)."""
    return float(dice_per_class(infer(model, x), y, classes).nanmean())


def corruption_dice(model: nn.Module, item: dict[str, Any], classes: int, severities: list[int]) -> float:
    """Mean Dice over every corruption and severity (seed 0, the case's affine and intensity map)."""
    x, y, meta = item["image"], item["label"][None], item["meta"]
    intensity = IntensityMap.from_dict(meta["intensity"])
    scores = []
    for name in CORRUPTION_NAMES:
        for severity in severities:
            image, _ = corrupt(x, name, severity, seed=0, affine=meta["grid_affine"], case_id=item["id"],
                               intensity=intensity)
            scores.append(mean_dice(model, image[None], y, classes))
    return sum(scores) / len(scores)


def attack_dice(model: nn.Module, item: dict[str, Any], classes: int, attack: str, steps: int) -> float:
    """Dice under ``attack`` (L-inf, EPS in EPS_UNIT of the case's valid range)."""
    x, y = item["image"][None], item["label"][None]
    intensity = IntensityMap.from_dict(item["meta"]["intensity"])
    budget = budget_for_case("linf", EPS, EPS_UNIT, x, intensity)
    x_adv = get_attack(attack, budget, steps=steps, loss="ce")(model, x, y)
    return mean_dice(model, x_adv, y, classes)


def evaluate(checkpoint: Path, data: Path, max_cases: int | None, severities: list[int],
             steps: int) -> dict[str, float | None]:
    """The four table columns for one checkpoint, averaged over the test cases."""
    model, info = load_checkpoint(checkpoint)
    test = open_split(data, "test", max_cases=max_cases)
    k = len(info.classes)
    columns: dict[str, Callable[[dict[str, Any]], float | None]] = {
        "clean": lambda it: mean_dice(model, it["image"][None], it["label"][None], k),
        "corruptions": lambda it: corruption_dice(model, it, k, severities),
        "PGD": lambda it: attack_dice(model, it, k, "pgd", steps),
        "APGD": lambda it: attack_dice(model, it, k, "apgd", steps),
    }
    items = [test.dataset[i] for i in range(len(test.dataset))]
    result: dict[str, float | None] = {}
    for name, column in columns.items():
        values = [column(it) for it in items]
        result[name] = None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]
    return result


def print_table(rows: dict[str, dict[str, float | None]], note: str) -> None:
    header = ["model", "clean Dice", "corruptions (mean)", f"PGD {EPS:g}/255", f"APGD {EPS:g}/255"]
    lines = [header] + [[label] + ["n/a" if v is None else f"{v:.3f}" for v in r.values()] for label, r in rows.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for j, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of every model (default 30)")
    parser.add_argument("--out", type=Path, default=Path("cooperative-vs-standard"), help="folder for data and runs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 epoch, 2 test cases, severities 1,3,5, 3 attack steps")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    epochs = 1 if args.quick else args.epochs
    max_cases, severities, steps = (2, [1, 3, 5], 3) if args.quick else (None, [1, 2, 3, 4, 5], 10)
    data = build_demo_segmentation(args.out / "data")  # the dataset.json path
    checkpoints = train_all(data, args.out, epochs)
    rows = {label: evaluate(ck, data, max_cases, severities, steps) for label, ck in checkpoints.items()}
    print_table(rows, f"test split{f' (first {max_cases} cases)' if max_cases else ''}, {epochs} epochs, seed 0; "
                      f"corruptions at severities {severities}; attacks: {steps} steps, CE loss")


if __name__ == "__main__":
    main()
