"""Every voxel-budget training recipe against `standard`: clean, PGD-10 and APGD-10 at the training eps.

    .venv/bin/python examples/recipe_comparison.py --out runs/recipes [--task seg|cls|both] [--quick]

Trains one model per recipe (same network, seed, epochs and loop) on the demo sets:

- ``seg``: the MNI152 3D brain-tissue set and the demo UNet (as `medrobust demo`), metric =
  mean foreground Dice over the test cases;
- ``cls``: the 2D lesion-classification PNG set (``minmax:0,255``, so 1/255 is one grey
  level) and a half-width resnet18, metric = accuracy.

Every adversarial recipe trains at L-inf 4/255 of the valid range (inner attacks: 5 steps
for pgd_at and trades and at most 5 for self_adaptive on seg, 3 and 4 on cls; 4 replays for
free_at; one random-start FGSM step for fast_at). The evaluation grid then attacks every
model on the test split with PGD-10 and APGD-10 at 4/255 and the script prints one table
per task (plus the self-adaptive run's per-epoch MAG / threshold / iterations), writes
OUT/<task>/recipes.csv and OUT/<task>/results/report.html. Reruns reuse finished trainings
(the loop resumes).
``--finetune`` starts every adversarial recipe from the trained ``standard`` model (its
weights, a fresh optimizer: ``medrobust train --init``), as VAFT's ``--use_pretrained`` and
SEAT's ``--ft`` do; its runs go to OUT/<task>/runs-finetuned.
``--quick`` is a smoke run (tiny data, 1 epoch, 2 attack steps): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.data.demo import build_demo_classification, build_demo_segmentation
from medrobust.demo import DEMO_MODEL_KWARGS, DEMO_TRAIN
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.devices import resolve_device
from medrobust.report import write_report
from medrobust.training import TrainConfig, train_model

EPS = 4.0
RECIPES: dict[str, dict[str, Any]] = {  # recipe -> parameters (all at L-inf EPS/255)
    "standard": {},
    "pgd_at": {"eps": EPS, "adv_weight": 0.5},
    "trades": {"eps": EPS, "beta": 6.0},
    "fast_at": {"eps": EPS},
    "free_at": {"eps": EPS, "replays": 4},
    "self_adaptive": {"eps": EPS, "check_every": 3},
}
TASKS: dict[str, dict[str, Any]] = {  # the inner attack's cost per task keeps a CPU run near half an hour
    "seg": {"model": "unet", "kwargs": DEMO_MODEL_KWARGS, "normalization": None, "metric": "mean foreground Dice",
            "inner": {"pgd_at": {"steps": 5}, "trades": {"steps": 5}, "self_adaptive": {"max_iters": 5}}},
    "cls": {"model": "resnet18", "kwargs": {"widen_factor": 0.5}, "normalization": "minmax:0,255",
            "metric": "accuracy",
            "inner": {"pgd_at": {"steps": 3}, "trades": {"steps": 3}, "self_adaptive": {"max_iters": 4}},
            # fast_at and free_at (4 replays = 4 optimizer steps per batch) collapsed to one class
            # at 3e-3 when initial weights were not yet seeded, so they train at 1e-3. Seeded, fast_at
            # at 1e-3 is the one that overfits catastrophically (FGSM loss 0.03, PGD accuracy 0.08),
            # while at 3e-3 it stays robust (examples/robust_selection.py): single-step training
            # is fragile in both directions.
            "lr": {"fast_at": 1e-3, "free_at": 1e-3}},
}


def build_data(task: str, out: Path, quick: bool, seed: int) -> Path:
    if task == "seg":
        sizes = {"n_train": 4, "n_val": 2, "n_test": 2} if quick else {}
        return build_demo_segmentation(out / "data", seed=seed, **sizes)
    sizes = {"n_train": 16, "n_val": 4, "n_test": 8, "size": 32} if quick else {}
    return build_demo_classification(out / "data", seed=seed, **sizes)


def train_recipes(task: str, data: Path, out: Path, config: TrainConfig, finetune: bool = False) -> dict[str, Path]:
    """Train (or resume) one model per recipe; recipe -> best checkpoint.

    With ``finetune`` every recipe but ``standard`` starts from the standard model's weights.
    """
    spec = TASKS[task]
    checkpoints: dict[str, Path] = {}
    for recipe, params in RECIPES.items():  # "standard" first: the others may start from it
        params = {**params, **spec["inner"].get(recipe, {})}
        lr = spec.get("lr", {}).get(recipe, config.lr)
        init = checkpoints["standard"] if finetune and recipe != "standard" else None
        runs = out / ("runs-finetuned" if init is not None else "runs")
        result = train_model(data, spec["model"], runs / recipe, recipe=recipe, recipe_params=params,
                             model_kwargs=spec["kwargs"], config=config.model_copy(update={"lr": lr}),
                             normalization=spec["normalization"], init=init, progress=False)
        print(f"[{task}] {recipe}: best validation score {result.best_metric:.3f} (epoch {result.best_epoch})")
        checkpoints[recipe] = result.checkpoint
    return checkpoints


def evaluate(checkpoints: dict[str, Path], data: Path, out: Path, steps: int, device: str) -> pd.DataFrame:
    """PGD and APGD at EPS on the test split for every model; rows of the results store."""
    grid = parse_config({
        "models": [{"name": recipe, "checkpoint": str(path)} for recipe, path in checkpoints.items()],
        "data": {"datalist": str(data), "split": "test"},
        "perturbations": [{"attack": a, "eps": [EPS], "eps_unit": "1/255", "options": {"steps": steps}}
                          for a in ("pgd", "apgd")],
        "out": str(out / "results"), "examples": 2, "device": device})
    results = run_grid(grid, progress=False)
    write_report(results)
    with ResultStore(results / "results.sqlite") as store:
        return store.to_dataframe()


def recipe_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe: clean, PGD and APGD scores (means over test cases) and their differences
    from ``standard`` (positive: the recipe scores higher)."""
    rows = []
    for recipe in RECIPES:
        g = runs[runs["model"] == recipe]
        row = {"recipe": recipe, "clean": g.drop_duplicates("case_id")["clean_score"].mean()}
        for attack in ("pgd", "apgd"):
            row[attack.upper()] = g[g["attack"] == attack]["adv_score"].mean()
        rows.append(row)
    table = pd.DataFrame(rows).set_index("recipe")
    base = table.loc["standard"]
    table["clean - standard"] = table["clean"] - base["clean"]
    table["PGD - standard"] = table["PGD"] - base["PGD"]
    return table


def print_self_adaptive_log(run: Path) -> None:
    """The per-epoch schedule of the self-adaptive run (its history.csv)."""
    rows = list(csv.DictReader((run / "history.csv").open()))
    print("\nself_adaptive schedule (history.csv): epoch, MAG, threshold, attack iterations")
    for r in rows:
        print(f"  {int(float(r['epoch'])):3d}  {float(r['mag']):.3e}  {float(r['threshold']):.3e}  "
              f"{int(float(r['attack_iters']))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/recipes"))
    ap.add_argument("--task", choices=["seg", "cls", "both"], default="both")
    ap.add_argument("--seg-epochs", type=int, default=30, help="epochs of every segmentation run (default 30)")
    ap.add_argument("--cls-epochs", type=int, default=12, help="epochs of every classification run (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, 2 attack steps")
    ap.add_argument("--finetune", action="store_true",
                    help="start each adversarial recipe from the trained standard model (train --init)")
    args = ap.parse_args()
    device = str(resolve_device(args.device))
    steps = 2 if args.quick else 10
    for task in (["seg", "cls"] if args.task == "both" else [args.task]):
        out = args.out / task
        epochs = 1 if args.quick else (args.seg_epochs if task == "seg" else args.cls_epochs)
        config = (DEMO_TRAIN if task == "seg" else TrainConfig(batch_size=16, lr=3e-3)).model_copy(
            update={"epochs": epochs, "seed": args.seed, "device": args.device})
        data = build_data(task, out, args.quick, args.seed)
        checkpoints = train_recipes(task, data, out, config, finetune=args.finetune)
        table = recipe_table(evaluate(checkpoints, data, out, steps, device))
        table.to_csv(out / "recipes.csv")
        print(f"\n{task}: {TASKS[task]['metric']} on the test split, {epochs} epochs, seed {args.seed}; "
              f"PGD-{steps} and APGD-{steps} at L-inf {EPS:g}/255 (training eps {EPS:g}/255)")
        print(table.to_string(float_format=lambda v: f"{v:+.3f}" if v < 0 else f"{v:.3f}"))
        print_self_adaptive_log(out / "runs" / "self_adaptive")
        print(f"report: {out / 'results' / 'report.html'}")


if __name__ == "__main__":
    main()
