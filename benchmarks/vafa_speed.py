"""Speed of VAFA and of the block DCT, measured in one run (issue 5, "Done when").

Prints:

- block DCT + inverse DCT of a 1x1x96^3 volume with 32^3 and 8^3 blocks, against the
  published pipeline's ~50 ms and ~107 ms on 2 CPU threads (goals: >= 4x and >= 15x
  faster, i.e. <= 12.5 ms and <= 7.1 ms);
- VAFA time per step / floor on a 3D UNet (MONAI, channels (16, 32, 64, 128)) at 96^3,
  where the floor is one forward plus one backward to the input only (parameters frozen,
  eval mode, the same Dice loss); goal <= 1.25. Per-step time = the whole attack's time /
  steps (20, as in the paper), so it includes the DCT of x, the final evaluation and the
  reported SSIM/PSNR; the marginal step (difference of a 20- and a 5-step run) is printed too.

Each number is the median over ``--repeats`` rounds after a warm-up.

    python benchmarks/vafa_speed.py [--device cpu|cuda] [--threads 2] [--steps 20] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from monai.networks.nets import UNet
from timing import timed  # benchmarks/timing.py (scripts run from benchmarks/ or with it on sys.path)
from torch import nn

from medrobust.attacks.dct import block_dct, block_idct
from medrobust.attacks.frequency import VAFA
from medrobust.losses import get_loss

PUBLISHED_MS = {32: 50.0, 8: 107.0}  # the published pipeline on 2 threads (issue 5)
GOAL_SPEEDUP = {32: 4.0, 8: 15.0}


def bench_dct(x: torch.Tensor, runs: int) -> None:
    for b in (32, 8):
        block = (b, b, b)

        def roundtrip(block: tuple[int, int, int] = block) -> torch.Tensor:
            return block_idct(block_dct(x, block), block, x.shape)

        roundtrip()
        ms = statistics.median(timed(roundtrip, x.device) for _ in range(runs)) * 1e3
        speedup = PUBLISHED_MS[b] / ms
        print(f"block DCT + IDCT 96^3, {b}^3 blocks: {ms:.2f} ms; published {PUBLISHED_MS[b]:.0f} ms -> "
              f"{speedup:.1f}x faster (goal >= {GOAL_SPEEDUP[b]:.0f}x, <= {PUBLISHED_MS[b] / GOAL_SPEEDUP[b]:.1f} ms)",
              flush=True)


def bench_vafa(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int) -> None:
    dice = get_loss("dice")

    def floor() -> torch.Tensor:
        xr = x.detach().requires_grad_(True)
        return torch.autograd.grad(dice(model(xr), y).sum(), xr)[0]

    short = max(1, steps // 4)
    attacks = {n: VAFA(q_max=20, steps=n, block_size=(32, 32, 32)) for n in (steps, short)}
    floors: list[float] = []
    totals: dict[int, list[float]] = {steps: [], short: []}
    for i in range(repeats + 1):  # round 0 warms up allocator and kernels
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        f = statistics.median(timed(floor, x.device) for _ in range(3))
        for p in model.parameters():  # what a user hands over: a trainable model
            p.requires_grad_(True)
        for n, attack in attacks.items():
            t = timed(lambda attack=attack: attack.run(model, x, y), x.device)
            if i:
                totals[n].append(t)
        if i:
            floors.append(f)
    fl = statistics.median(floors)
    whole = statistics.median(totals[steps]) / steps
    marginal = (statistics.median(totals[steps]) - statistics.median(totals[short])) / (steps - short)
    print(f"VAFA 3D UNet 1x1x96^3, 32^3 blocks, {steps} steps: floor {fl * 1e3:.1f} ms, VAFA step "
          f"{whole * 1e3:.1f} ms (whole attack / steps), step/floor {whole / fl:.3f} (goal <= 1.25); "
          f"marginal step ({short} -> {steps} steps) {marginal * 1e3:.1f} ms, /floor {marginal / fl:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dct-runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, "
          f"repeats {args.repeats}", flush=True)
    x = torch.rand(1, 1, 96, 96, 96, device=device)
    bench_dct(x, args.dct_runs)
    y = torch.randint(0, 3, (1, 1, 96, 96, 96), device=device)
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=2).to(device)
    bench_vafa(unet, x, y, args.steps, args.repeats)


if __name__ == "__main__":
    main()
