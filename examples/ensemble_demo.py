"""Three classifiers, their ensemble, and whether its hard vote survives a joint attack (seed 002).

    .venv/bin/python examples/ensemble_demo.py --out runs/ensemble [--epochs 15] [--quick] [--device auto]

On the 2D demo classification set (MNI152 slices, healthy vs lesion, 8-bit PNG read with
``minmax:0,255`` so eps/255 is one grey level): trains resnet18, densenet121 and
resnet34 (narrowed so a CPU run takes minutes; same seed, epochs and loop for all),
joins them with ``medrobust ensemble``, runs the evaluation grid (FGSM and PGD at eps 2, 4,
8/255 on every member and on the ensemble; for the ensemble also transfer attacks made on
each member and the joint attack through its mean), prints the ensemble table and writes
OUT/results/report.html. ``--quick`` is a smoke run (tiny data, 1 epoch, 2 PGD steps, one
eps): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from medrobust.data.demo import build_demo_classification
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.ensembles import SCORINGS, ensemble_table, load_ensemble_runs
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.devices import resolve_device
from medrobust.models.ensemble import build_ensemble
from medrobust.report import write_report
from medrobust.report.classification import ensemble_context
from medrobust.training import TrainConfig, train_model

NORMALIZATION = "minmax:0,255"
# MONAI's efficientnet-b0 never left chance on this set (lr 3e-3 and 3e-4; its first-epoch loss is
# 6-10 and its eval-mode predictions are constant), so the third member is a half-width resnet34.
MEMBERS = {"resnet18": {"widen_factor": 0.5},
           "densenet121": {"init_features": 16, "growth_rate": 16},
           "resnet34": {"widen_factor": 0.5}}


def print_table(store: Path) -> None:
    """The ensemble table: accuracy of the hard vote / soft vote / mean logits per setting and eps."""
    t = ensemble_table(load_ensemble_runs(store))
    t["hard / soft / mean"] = [" / ".join(f"{100 * r[s]:5.1f}" for s in SCORINGS) for _, r in t.iterrows()]
    for (model, pert), g in t[t["perturbation"] != "clean"].groupby(["model", "perturbation"]):
        clean = t[(t["model"] == model) & (t["setting"] == "clean")]
        wide = g.pivot_table(index="setting", columns="eps_stated", values="hard / soft / mean", aggfunc="first",
                             sort=False)
        wide.columns = [f"eps {e:g}/255" for e in wide.columns]
        print(f"\n{model} under {pert}: accuracy % (hard vote / soft vote / mean logits), "
              f"{int(g['n_cases'].max())} test cases")
        print(f"clean: {clean['hard / soft / mean'].iloc[0]}")
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(wide.to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ensemble"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, 2 PGD steps")
    args = ap.parse_args()
    if args.quick:
        args.epochs = 1
    sizes = {"n_train": 16, "n_val": 4, "n_test": 8, "size": 32} if args.quick else {}
    data = build_demo_classification(args.out / "data", seed=args.seed, **sizes)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device)  # reruns reuse finished members
    checkpoints = []
    for name, kwargs in MEMBERS.items():
        result = train_model(data, name, args.out / "runs" / name, model_kwargs=kwargs, config=config,
                             normalization=NORMALIZATION, progress=False)
        print(f"[{name}] best validation balanced accuracy {result.best_metric:.3f} (epoch {result.best_epoch})")
        checkpoints.append(result.checkpoint)
    ensemble = build_ensemble(checkpoints, args.out / "runs" / "ensemble")
    steps, eps = (2, [4.0]) if args.quick else (10, [2.0, 4.0, 8.0])
    grid = parse_config({
        "models": [{"name": p.parent.name, "checkpoint": str(p)} for p in [*checkpoints, ensemble]],
        "data": {"datalist": str(data), "split": "test"},
        "perturbations": [{"attack": "fgsm", "eps": eps, "eps_unit": "1/255"},
                          {"attack": "pgd", "eps": eps, "eps_unit": "1/255", "options": {"steps": steps}}],
        "out": str(args.out / "results"), "examples": 3, "device": str(resolve_device(args.device))})
    out = run_grid(grid, progress=not args.quick)
    print_table(out / "results.sqlite")
    with ResultStore(out / "results.sqlite") as store:
        models = store.models()
    for sentence in ensemble_context(out / "results.sqlite", models)[1]:
        print(f"\n{sentence}")
    print(f"\nreport: {write_report(out)}")


if __name__ == "__main__":
    main()
