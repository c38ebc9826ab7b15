"""Overhead of the evaluation grid over the attacks it runs (issue 7, "Done when").

Runs a small grid on the MNI152 demo set (or any grid YAML given with ``--grid``) into a
fresh folder (after building the demo data, which is cached for later runs) and prints

    grid wall time / sum of the attacks' own times      (goal <= 1.10)

where the attacks' own time is the ``attack_seconds`` of every row (``attack.run`` only).
Everything else counts as overhead: loading checkpoints and data, clean and adversarial
inference, metrics (Dice, SSIM, PSNR, norms), example slices, the SQLite store, the
masking checks and results.csv. The report's rendering time is printed separately and as
a second ratio. The default model is the demo's small 3D UNet, untrained (the ratio does
not depend on the weights); pass ``--checkpoint`` to use a trained one.

    python benchmarks/grid_overhead.py [--grid grid.yaml] [--cases 4] [--steps 10] [--out DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from medrobust.evaluation.config import load_config
from medrobust.evaluation.grid import prepare, run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model
from medrobust.report import write_report

DEMO_KWARGS = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}


def demo_grid(folder: Path, checkpoint: Path | None, cases: int, steps: int) -> Path:
    """A grid like the demo's: FGSM, PGD, APGD-CE, Square at eps 2, 4, 8 /255."""
    if checkpoint is None:
        torch.manual_seed(0)
        net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=4, **DEMO_KWARGS)
        checkpoint = save_checkpoint(folder / "model", net, classes=["background", "gm", "wm", "csf"],
                                     extra={"normalization": "zscore"})
    eps = {"eps": [2, 4, 8], "eps_unit": "1/255"}
    cfg = {"models": [{"name": "unet", "checkpoint": str(checkpoint)}],
           "data": {"demo": "segmentation", "split": "test", "max_cases": cases},
           "perturbations": [{"attack": "fgsm", **eps},
                             {"attack": "pgd", **eps, "options": {"steps": steps, "loss": "dice_ce"}},
                             {"attack": "apgd-ce", **eps, "options": {"steps": steps}},
                             {"attack": "square", **eps, "options": {"steps": 10 * steps}}],
           "out": str(folder / "results"), "examples": 3}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, help="a grid YAML (its `out` is replaced by a fresh folder)")
    parser.add_argument("--checkpoint", type=Path, help="model.json for the default demo grid")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="grid-overhead-"))
    try:
        if args.grid:
            cfg = yaml.safe_load(args.grid.read_text())
            cfg["out"] = str(folder / "results")
            grid = folder / "grid.yaml"
            grid.write_text(yaml.safe_dump(cfg))  # paths in it must then be absolute
        else:
            grid = demo_grid(folder, args.checkpoint, args.cases, args.steps)
        prepare(load_config(grid))  # builds the demo data once (a cache a user has after the first run)
        start = time.perf_counter()
        out = run_grid(grid, progress=False)
        wall = time.perf_counter() - start
        start = time.perf_counter()
        write_report(out)
        report = time.perf_counter() - start
        with ResultStore(out / "results.sqlite") as store:
            df = store.to_dataframe()
        attacks, rows = float(df["attack_seconds"].sum()), float(df["seconds"].sum())
        print(f"runs: {len(df)} ({df['perturbation'].nunique()} attacks x {df['eps_stated'].nunique()} eps x "
              f"{df['case_id'].nunique()} cases), torch threads {torch.get_num_threads()}")
        print(f"sum of attack times:   {attacks:8.2f} s")
        print(f"sum of row times:      {rows:8.2f} s  (attack + adversarial inference + metrics + store)")
        print(f"grid wall time:        {wall:8.2f} s  (+ loading, clean inference, checks, csv)")
        print(f"report:                {report:8.2f} s")
        print(f"grid wall / attacks:   {wall / attacks:8.3f}  (goal <= 1.10)")
        print(f"(grid + report) / attacks: {(wall + report) / attacks:.3f}")
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
