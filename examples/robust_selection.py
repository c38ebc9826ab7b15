"""Which epoch to keep: fast_at selected on clean vs robust validation (`--select`).

    .venv/bin/python examples/robust_selection.py --out runs/selection [--eps 4] [--epochs 12] [--lr 3e-3] [--quick]

On the 2D demo classification set (``minmax:0,255``, so 1/255 is one grey level), trains the
half-width resnet18 with ``fast_at`` (one FGSM step of 1.25·eps from a random start, at
L-inf eps/255) twice with the same seed, so both runs go through the same weights epoch by
epoch; only the kept epoch differs: ``--select clean`` keeps the best clean validation
score, ``--select robust`` the best validation score under PGD-10 at the training eps.
Single-step training can overfit catastrophically (Wong et al. 2020): its robustness to
multi-step attacks collapses while the clean score keeps rising, and only robust selection
notices. The script prints the per-epoch validation scores of the run and both kept
checkpoints' test balanced accuracy, clean and under PGD-10; try ``--lr 1e-3`` too, where
this run never becomes robust and robust selection keeps the constant classifier of epoch 1
(balanced accuracy 0.5 clean and attacked): the caveat of ``--select`` on two classes.
``--quick`` is a smoke run: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from medrobust.data.demo import build_demo_classification
from medrobust.data.sources import open_split
from medrobust.models import load_checkpoint
from medrobust.models.devices import resolve_device
from medrobust.training import TrainConfig, train_model
from medrobust.training.validation import RobustEvaluation, selection_metrics

NORMALIZATION = "minmax:0,255"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/selection"))
    # at 8/255 this classifier does not learn at all on the demo set (its lesions are a few grey levels)
    ap.add_argument("--eps", type=float, default=4.0, help="training and validation eps in 1/255 (default 4)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs, 2 PGD steps")
    args = ap.parse_args()
    sizes = {"n_train": 16, "n_val": 4, "n_test": 8, "size": 32} if args.quick else {}
    data = build_demo_classification(args.out / "data", seed=args.seed, **sizes)
    pgd = RobustEvaluation(eps=args.eps, steps=2 if args.quick else 10)
    base = TrainConfig(epochs=2 if args.quick else args.epochs, batch_size=16, lr=args.lr, seed=args.seed,
                       device=args.device, select_attack=pgd)
    device = resolve_device(args.device)
    kept = {}
    for select in ("clean", "robust"):
        result = train_model(data, "resnet18", args.out / select, recipe="fast_at", recipe_params={"eps": args.eps},
                             model_kwargs={"widen_factor": 0.5}, config=base.model_copy(update={"select": select}),
                             normalization=NORMALIZATION, progress=False)
        model, info = load_checkpoint(result.checkpoint)
        test = open_split(data, "test", normalization=NORMALIZATION)
        scores = selection_metrics("robust", model.to(device), test.dataset, pgd, roi_size=None, overlap=0.25,
                                   device=device, num_classes=len(info.classes))
        kept[select] = (result.best_epoch, scores["clean_score"], scores["robust_score"])

    print(f"\nfast_at at {args.eps:g}/255, lr {args.lr:g}: validation balanced accuracy per epoch, clean and under "
          f"PGD-{pgd.steps} at {args.eps:g}/255")
    print("  epoch  train loss  clean  PGD")
    for row in csv.DictReader((args.out / "robust" / "history.csv").open()):
        print(f"  {int(float(row['epoch'])):5d}  {float(row['train_loss']):10.3f}  {float(row['val_clean_score']):.2f}"
              f"   {float(row['val_robust_score']):.2f}")
    n = len(test.dataset)
    print(f"\ntest split ({n} images): balanced accuracy of the kept checkpoint, clean and under PGD-{pgd.steps} "
          f"at {args.eps:g}/255")
    for select, (epoch, clean, robust) in kept.items():
        print(f"  --select {select:<6}  epoch {epoch:2d}   clean {clean:.2f}   PGD {robust:.2f}")


if __name__ == "__main__":
    main()
