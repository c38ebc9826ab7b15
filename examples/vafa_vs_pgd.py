"""VAFA (frequency budget) against PGD (voxel budget) on a trained demo model.

    .venv/bin/python examples/vafa_vs_pgd.py --checkpoint medrobust-demo/model/model.json \
        [--data medrobust-demo/data/dataset.json] [--cases 4] [--steps 20]

Prints one table per attack setting: mean foreground Dice (clean and attacked), SSIM, PSNR
and the L-inf of the change in model units and in raw intensity units, so the frequency
budget (q_max, in 1/255 of the valid range) can be compared with the voxel one (eps/255).
Pass ``--checkpoint`` several times to compare models (e.g. standard vs VAFT).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medrobust.attacks import get_attack
from medrobust.data.sources import open_split
from medrobust.metrics import dice_per_class, psnr, ssim
from medrobust.models.checkpoint import load_checkpoint
from medrobust.models.inference import infer
from medrobust.units import IntensityMap, budget_for_case


def settings(steps: int, q_max: float, block: int) -> list[tuple[str, str, dict]]:
    return [("PGD eps 4/255", "pgd", {"eps": 4.0, "options": {"steps": steps, "loss": "dice_ce"}}),
            ("PGD eps 8/255", "pgd", {"eps": 8.0, "options": {"steps": steps, "loss": "dice_ce"}}),
            (f"VAFA-3D q_max {q_max:g}", "vafa3d", {"eps": 0.0, "options": {
                "steps": steps, "q_max": q_max, "block_size": (block,) * 3}})]


def evaluate(checkpoint: Path, data: Path, cases: int, steps: int, q_max: float, block: int) -> None:
    model, info = load_checkpoint(checkpoint)
    split = open_split(data, "test", normalization=info.extra.get("normalization"), max_cases=cases)
    k = len(info.classes)
    print(f"\n{checkpoint}  ({info.recipe}; {len(split.dataset)} test cases)")
    print(f"{'attack':<22}{'clean Dice':>11}{'adv Dice':>10}{'SSIM':>7}{'PSNR dB':>9}{'Linf model':>11}{'Linf raw':>10}")
    for label, name, spec in settings(steps, q_max, block):
        rows = []
        for i in range(len(split.dataset)):
            torch.manual_seed(i)
            item = split.dataset[i]
            x, y = item["image"][None], torch.as_tensor(item["label"])[None]
            imap = IntensityMap.from_dict(item["meta"]["intensity"])
            budget = budget_for_case("linf", spec["eps"], "1/255", x, imap)
            x_adv = get_attack(name, budget, **spec["options"])(model, x, y)
            lo, hi = budget.range_for(x)
            width = float((hi - lo).reshape(-1)[0])
            delta = (x_adv - x).abs().amax()
            rows.append([float(dice_per_class(infer(model, x), y, k).nanmean()),
                         float(dice_per_class(infer(model, x_adv), y, k).nanmean()),
                         float(ssim(x, x_adv, width)[0]), float(psnr(x, x_adv, width)[0]),
                         float(delta), float(imap.model_delta_to_raw(float(delta)))])
        mean = torch.tensor(rows).mean(0).tolist()
        print(f"{label:<22}{mean[0]:>11.3f}{mean[1]:>10.3f}{mean[2]:>7.3f}{mean[3]:>9.1f}{mean[4]:>11.3f}{mean[5]:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, default=Path("medrobust-demo/data/dataset.json"))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--q-max", type=float, default=20.0)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for checkpoint in args.checkpoint:
        evaluate(checkpoint, args.data, args.cases, args.steps, args.q_max, args.block)


if __name__ == "__main__":
    main()
