"""Targeted attacks that target, on the demo segmenter (issue 15, item 4, "Done when").

Trains (or reuses) the demo's 3D UNet (:func:`medrobust.demo.demo_model`) and, on the first
``--cases`` test cases at L-inf 8/255, runs PGD with the CE, SegPGD and CosPGD losses,
untargeted and targeted with ``target: {map: {gm: background}}`` (grey matter to
background, the clinically dangerous attack), through the evaluation core. It prints the
target success (the fraction of grey-matter voxels predicted as background) of each, and
checks that every targeted attack reaches a higher success than its untargeted twin.

    python benchmarks/targeted_success.py [--root medrobust-demo] [--cases 3] [--steps 10]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from medrobust.demo import demo_model
from medrobust.evaluation.cases import prepare_case
from medrobust.evaluation.config import AttackSpec
from medrobust.evaluation.core import evaluate_run
from medrobust.evaluation.loading import load_model
from medrobust.evaluation.targets import parse_target
from medrobust.evaluation.types import RunSettings

TARGET = {"map": {"gm": "background"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("medrobust-demo"))
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    checkpoint = demo_model(args.root, progress=False)
    lm = load_model(checkpoint, args.root / "data" / "dataset.json", "test", max_cases=args.cases)
    settings = RunSettings(seed=0, config_hash="targeted-success")
    target = parse_target(TARGET)
    cases = [prepare_case(lm, lm.split.dataset[i], settings) for i in range(len(lm.split.dataset))]
    print(f"{'loss':8s} {'untargeted':>11s} {'targeted':>9s}   (fraction of gm voxels predicted background, "
          f"{len(cases)} cases, 8/255, {args.steps} steps)")
    ok = True
    for loss in ("ce", "segpgd", "cospgd"):
        hits = {}
        for targeted in (False, True):
            spec = AttackSpec(attack="pgd", eps=[8], eps_unit="1/255", options={"steps": args.steps, "loss": loss},
                              target=TARGET if targeted else None)
            success = []
            for case in cases:
                run = evaluate_run(lm, spec, 8.0, case, settings)
                goal = target.labels(case.y, case.clean_logits, lm.classes, 0, case.id)
                success.append(target.success(run.logits, case.y, goal))
            hits[targeted] = sum(success) / len(success)
        ok &= hits[True] > hits[False]
        print(f"{loss:8s} {hits[False]:11.3f} {hits[True]:9.3f}")
    print(f"targeted > untargeted for every loss: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
