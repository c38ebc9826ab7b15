"""seg-ensemble vs today's demo grid on the demo segmenter (issue 15, item 3, "Done when").

Trains (or reuses) the demo's 3D UNet on the MNI152 demo set (:func:`medrobust.demo.demo_model`)
and, on the first ``--cases`` test cases at L-inf eps = 8/255, prints the mean foreground Dice

- of each L-inf attack of today's demo grid (:func:`medrobust.demo.demo_grid`: FGSM, PGD-10,
  APGD-10, Square-50; VAFA is a frequency threat model and never joins the L-inf worst case)
  and their worst case per case (as the grid's report computes it,
  :func:`~medrobust.evaluation.robustness.worst_case_per_case`);
- of each member of ``seg-ensemble`` and of the ensemble (the worst per case).

Every run goes through the evaluation core (:mod:`medrobust.evaluation.core`) with the
grid's seeds, so the demo grid's numbers are the grid's. Checks, printed at the end:
seg-ensemble's Dice <= the demo grid's worst case, and every member's Dice >= the ensemble's.

The paper's step counts (300/200 steps, 5000 Square queries) take hours per case on
two CPU cores; ``--steps N`` runs the short version (N steps per member).

    python benchmarks/seg_ensemble.py [--root medrobust-demo] [--cases 3] [--steps 20] [--device cpu]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from medrobust.attacks.seg_ensemble import SegEnsemble
from medrobust.demo import demo_grid, demo_model
from medrobust.evaluation.cases import prepare_case, score
from medrobust.evaluation.config import AttackSpec, parse_config
from medrobust.evaluation.core import attack_for, evaluate_run, run_seed
from medrobust.evaluation.loading import load_model
from medrobust.evaluation.robustness import worst_case_per_case
from medrobust.evaluation.types import RunSettings
from medrobust.models.inference import infer

EPS = 8.0  # in 1/255 of the valid range


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("medrobust-demo"), help="the demo folder (data, model)")
    parser.add_argument("--cases", type=int, default=3, help="test cases (the demo grid uses 3)")
    parser.add_argument("--steps", type=int, default=None, help="short version: N steps per member (default: paper's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    checkpoint = demo_model(args.root, progress=False)
    datalist = args.root / "data" / "dataset.json"
    lm = load_model(checkpoint, datalist, "test", name="demo-unet", max_cases=args.cases)
    lm.model.to(args.device)
    grid = parse_config(demo_grid(checkpoint, datalist, args.root / "results", args.cases), source="demo grid")
    linf = [p for p in grid.perturbations if isinstance(p, AttackSpec) and p.norm == "linf"]
    spec = AttackSpec(attack="seg-ensemble", eps=[EPS], eps_unit="1/255",
                      options={} if args.steps is None else {"steps": args.steps})
    settings = RunSettings(seed=grid.seed, config_hash="benchmark", metrics=frozenset())

    rows: list[dict[str, object]] = []
    members: list[dict[str, float]] = []
    clean: list[float] = []
    ensemble: list[float] = []  # Dice as the grid scores it (metrics.dice_per_class)
    kept: list[float] = []  # Dice as the attacks track it (outcome.foreground_dice): members' unit
    seconds = 0.0
    description = ""
    for i in range(len(lm.split.dataset)):
        item = lm.split.dataset[i]
        case = prepare_case(lm, item, settings, device=args.device)
        for p in linf:
            rows.append(evaluate_run(lm, p, EPS, case, settings).row.as_dict())
        torch.manual_seed(run_seed(settings.seed, lm.name, spec.label, EPS, case.id))
        _, attack = attack_for(spec, EPS, case.x, case.imap)
        assert isinstance(attack, SegEnsemble)
        description = attack.describe()
        t0 = time.perf_counter()
        result = attack.run(case.model, case.x, case.y)
        seconds += time.perf_counter() - t0
        members.append({name: float(result.extra[f"metric_{name}"][0]) for name, _ in attack.members})
        adv = score(infer(case.model, result.x_adv), case.y, lm.classes)
        clean.append(case.clean.score)
        ensemble.append(adv.score)
        kept.append(float(result.metric[0]) if result.metric is not None else float("nan"))
        print(f"case {case.id}: clean {case.clean.score:.4f}, seg-ensemble {adv.score:.4f}", flush=True)

    df = pd.DataFrame(rows)
    grid_mean = df.groupby("perturbation")["adv_score"].mean()
    grid_worst = float(worst_case_per_case(df)["score"].mean())
    member_mean = pd.DataFrame(members).mean()
    ens_mean = sum(ensemble) / len(ensemble)

    print(f"\nDemo segmenter, {len(ensemble)} test cases, L-inf eps = {EPS:g}/255, mean foreground Dice "
          f"(clean {sum(clean) / len(clean):.4f})")
    print(f"seg-ensemble members: {description}")
    print("  today's demo grid (L-inf attacks):")
    for name, value in grid_mean.items():
        print(f"    {name:<14} {value:.4f}")
    print(f"    {'worst case':<14} {grid_worst:.4f}")
    print("  seg-ensemble:")
    for name, value in member_mean.items():
        print(f"    {name:<14} {value:.4f}")
    print(f"    {'ensemble':<14} {ens_mean:.4f}   ({seconds:.0f} s in all)")
    print(f"\nseg-ensemble <= demo grid worst case: {ens_mean <= grid_worst + 1e-9} "
          f"({ens_mean:.4f} vs {grid_worst:.4f})")
    print(f"every member >= the ensemble (per case): "
          f"{all(v >= e - 1e-6 for m, e in zip(members, kept) for v in m.values())}")
    print(f"ensemble Dice as the attacks track it: {sum(kept) / len(kept):.4f} (the grid's: {ens_mean:.4f})")


if __name__ == "__main__":
    main()
