"""Domain assimilation vs vanilla transfer vs PGD-AT under FGSM, BIM, MI-FGSM and PGD (seed 004).

    .venv/bin/python examples/assimilation_vs_transfer.py --out runs/assimilation [--epochs 20]
        [--pretrained natural/model.json] [--quick] [--device auto]

On the 2D demo classification set (MNI152 slices, healthy vs lesion, 64x64, 8-bit PNG read
with ``minmax:0,255`` so eps/255 is one grey level), with the same backbone, seed and
epochs for all three:

- transfer:     the natural-image backbone fine-tuned (RGB stem summed onto the grey channel);
- assimilation: texture + colour modules before the same backbone, recipe ``assimilation``;
- pgd_at:       the transfer set-up trained with recipe ``pgd_at`` (eps 4/255).

The backbone comes from ``--pretrained`` or is pretrained here by ``medrobust
pretrain-natural`` (cached in OUT/natural). Prints accuracy on the test split, clean and
under each attack at eps 1..8/255 (the evaluation grid: OUT/results/report.html draws the
curves), and writes OUT/accuracy.csv (model, attack, eps, accuracy; eps 0 = clean).
``--quick`` is a smoke run (tiny data, 1 epoch, 2 attack steps, eps 1, 4, 8): its numbers
mean nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medrobust.data.demo import build_demo_classification
from medrobust.data.sources import open_split
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models import build_model, read_checkpoint_info
from medrobust.models.devices import resolve_device
from medrobust.models.pretrained import load_pretrained
from medrobust.report import write_report
from medrobust.training import TrainConfig, build_recipe, fit
from medrobust.training.pretrain import pretrain_natural
from medrobust.units import IntensityMap

ATTACKS = ("fgsm", "bim", "mifgsm", "pgd")
NORMALIZATION = "minmax:0,255"


def backbone_of(pretrained: Path) -> tuple[str, dict[str, Any]]:
    """Registry name and extra kwargs of the pretrained backbone (dims and channels removed)."""
    info = read_checkpoint_info(pretrained)
    extra = {k: v for k, v in info.kwargs.items() if k not in ("spatial_dims", "in_channels", "out_channels")}
    return info.architecture, extra


def train_all(root: Path, data: Path, pretrained: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Train the three models with one loop configuration; return their best checkpoints."""
    train = open_split(data, "train", normalization=NORMALIZATION)
    val = open_split(data, "val", normalization=NORMALIZATION)
    intensity = IntensityMap.from_dict(train.dataset[0]["meta"]["intensity"])
    backbone, kwargs = backbone_of(pretrained)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device, resume=False)
    dims = {"spatial_dims": 2, "in_channels": train.in_channels, "out_channels": len(train.classes)}
    at_steps = 2 if args.quick else 5
    plans = {"transfer": ("standard", {}), "assimilation": ("assimilation", {"alpha": args.alpha}),
             "pgd_at": ("pgd_at", {"eps": 4.0, "eps_unit": "1/255", "steps": at_steps})}
    out = {}
    for name, (recipe, params) in plans.items():
        torch.manual_seed(args.seed)
        if name == "assimilation":
            model = build_model("assimilation", **dims, backbone=backbone, backbone_kwargs=kwargs,
                                backbone_weights=str(pretrained))
            report = model.pretrained_report
        else:
            model = build_model(backbone, **dims, **kwargs)
            report = load_pretrained(model, pretrained)
        print(f"[{name}] {report.summary()}")
        result = fit(model, build_recipe(recipe, **params), train.dataset, val.dataset, config, root / "runs" / name,
                     classes=train.classes, intensity=intensity, extra={"normalization": NORMALIZATION},
                     progress=False)
        print(f"[{name}] best validation balanced accuracy {result.best_metric:.3f} (epoch {result.best_epoch})")
        out[name] = result.checkpoint
    return out


def evaluate(checkpoints: dict[str, Path], data: Path, args: argparse.Namespace) -> pd.DataFrame:
    """FGSM, BIM, MI-FGSM and PGD at every eps on the test split through the evaluation grid
    (results.sqlite, results.csv and report.html with the robustness curves in OUT/results);
    returns the long table model, attack, eps, accuracy (eps 0 = clean)."""
    eps_list = [1.0, 4.0, 8.0] if args.quick else [float(e) for e in range(1, 9)]
    steps = 2 if args.quick else args.attack_steps
    grid = parse_config({
        "models": [{"name": name, "checkpoint": str(path)} for name, path in checkpoints.items()],
        "data": {"datalist": str(data), "split": "test", "normalization": NORMALIZATION},
        "perturbations": [{"attack": a, "eps": eps_list, "eps_unit": "1/255",
                           "options": {} if a == "fgsm" else {"steps": steps}} for a in ATTACKS],
        "out": str(args.out / "results"), "examples": 3, "device": str(resolve_device(args.device))})
    results = run_grid(grid, progress=not args.quick)
    print(f"report: {write_report(results)}")
    with ResultStore(results / "results.sqlite") as store:
        runs = store.to_dataframe()
    clean = runs.drop_duplicates(["model", "case_id"]).groupby("model", sort=False)["clean_score"].mean()
    rows = [{"model": m, "attack": "clean", "eps": 0.0, "accuracy": float(v)} for m, v in clean.items()]
    adv = runs.groupby(["model", "attack", "eps_stated"], sort=False)["adv_score"].mean().reset_index()
    rows += [{"model": r.model, "attack": r.attack, "eps": float(r.eps_stated), "accuracy": float(r.adv_score)}
             for r in adv.itertuples()]
    return pd.DataFrame(rows)


def print_table(rows: pd.DataFrame) -> None:
    eps_list = sorted(rows.loc[rows["attack"] != "clean", "eps"].unique())
    print(f"\naccuracy on the test split ({'/'.join(ATTACKS)} at eps/255)")
    print(f"{'model':<14}{'attack':<8}{'clean':>7}" + "".join(f"{e:>7g}" for e in eps_list))
    for model in rows["model"].unique():
        mine = rows[rows["model"] == model]
        clean = float(mine.loc[mine["attack"] == "clean", "accuracy"].iloc[0])
        for attack in ATTACKS:
            accs = dict(zip(mine.loc[mine["attack"] == attack, "eps"], mine.loc[mine["attack"] == attack, "accuracy"]))
            print(f"{model:<14}{attack:<8}{clean:>7.3f}" + "".join(f"{accs[e]:>7.3f}" for e in eps_list))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/assimilation_vs_transfer"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--pretrained", type=Path, default=None, help="backbone weights (default: pretrain here)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of CE in the assimilation loss")
    parser.add_argument("--attack-steps", type=int, default=10, help="BIM/MI-FGSM/PGD iterations")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, 2 attack steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs = 1
    sizes = {"n_train": 16, "n_val": 4, "n_test": 8} if args.quick else {}
    data = build_demo_classification(args.out / "data", seed=args.seed, **sizes)
    pretrained = args.pretrained or pretrain_natural(
        args.out / "natural", seed=args.seed, device=args.device,
        **({"steps": 4, "batch_size": 8, "patch_size": 16} if args.quick else {}))
    rows = evaluate(train_all(args.out, data, pretrained, args), data, args)
    print_table(rows)
    rows.to_csv(args.out / "accuracy.csv", index=False)
    print(f"\nwritten: {args.out / 'accuracy.csv'}")


if __name__ == "__main__":
    main()
