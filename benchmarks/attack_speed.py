"""Speed and memory of the attack loop, measured in one run (issue 4, "Done when").

Prints, for a 3D UNet (1x1x64^3 by default) and a 2D DenseNet121 (8x1x128^2):

- time per PGD step / floor, where the floor is one forward plus one backward to the input
  only (parameters frozen, eval mode), timed over as many back-to-back steps as the attack
  takes; goal <= 1.10;
- our PGD / torchattacks' PGD on the classifier, same eps/alpha/steps/random start;
  goal <= 1.0. torchattacks runs in eval mode too but leaves parameters trainable (and
  does not restore flags as we do);
- peak memory of a whole-volume PGD attack through SlidingWindow over 8 windows (2 per
  axis, overlap 0.25; ROI 96^3 on CUDA, 32^3 on CPU) / peak memory of one window's
  forward + backward to the input, same UNet, parameters frozen; goal <= 1.5. Peaks are
  measured above what was resident before the call (model, volume, labels) by
  ``timing.peak_bytes``; ``sliding_window_memory.py`` breaks the gradient alone down.

Each number is the median over ``--repeats`` rounds after a warm-up (the ratio of the
fastest rounds is printed beside it: on a shared CPU it is the least disturbed); within a
round the floor, ours and torchattacks run back to back so load drift hits all alike.
Per-step time = the whole attack's time / steps, so it includes the start point, the
best-iterate tracking and the final evaluation of the last iterate (one extra forward per
attack that torchattacks does not make: about 1/(3·steps) of the time).

    python benchmarks/attack_speed.py [--device cuda] [--steps 10] [--repeats 5] [--small] [--roi 32]
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, UNet
from torch import nn

from timing import peak_bytes, timed  # benchmarks/timing.py (run from benchmarks/ or with it on sys.path)
from medrobust.attacks import PGD
from medrobust.models import SlidingWindow
from medrobust.units import Budget


def floor_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[], object]:
    """``steps`` back-to-back forward + backward passes to the input only, parameters
    frozen: the cheapest possible attack, amortised over as many steps as the attack."""
    target = y if y.ndim == 1 else y[:, 0]

    def run() -> object:
        g = x
        for _ in range(steps):
            xr = x.detach().requires_grad_(True)
            g = torch.autograd.grad(F.cross_entropy(model(xr), target), xr)[0]
        return g
    return run


def frozen_eval(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def bench(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int,
          with_torchattacks: bool) -> dict[str, float]:
    device = x.device
    budget = Budget.linf(4, unit="1/255", valid_range=(0.0, 1.0))
    ours = PGD(budget, steps=steps, step_size=1, random_start=True)  # 1/255 per step
    theirs = None
    if with_torchattacks:
        from torchattacks.attacks.pgd import PGD as TaPGD  # installed with --no-deps
        theirs = TaPGD(model, eps=4 / 255, alpha=1 / 255, steps=steps, random_start=True)
    floor_fn = floor_steps(model, x, y, steps)
    floors, mine, others = [], [], []
    for i in range(repeats + 1):  # round 0 is the warm-up (allocator, kernels, autotuning)
        frozen_eval(model)
        floor = timed(floor_fn, device) / steps
        for p in model.parameters():  # what a user hands over: a trainable model
            p.requires_grad_(True)
        if i == 0:
            ours(model, x, y)
            if theirs is not None:
                theirs(x, y)
            continue
        floors.append(floor)
        mine.append(timed(lambda: ours(model, x, y), device) / steps)
        if theirs is not None:
            others.append(timed(lambda: theirs(x, y), device) / steps)
    out = {"floor_s": statistics.median(floors), "pgd_step_s": statistics.median(mine),
           "floor_min_s": min(floors), "pgd_step_min_s": min(mine)}
    out["step_over_floor"] = out["pgd_step_s"] / out["floor_s"]
    out["step_over_floor_min"] = out["pgd_step_min_s"] / out["floor_min_s"]
    print(f"{name}: floor {out['floor_s'] * 1e3:.1f} ms, PGD step {out['pgd_step_s'] * 1e3:.1f} ms, "
          f"step/floor {out['step_over_floor']:.3f} (goal <= 1.10; of the fastest rounds "
          f"{out['step_over_floor_min']:.3f})", flush=True)
    if others:
        out["torchattacks_step_s"] = statistics.median(others)
        out["ours_over_torchattacks"] = out["pgd_step_s"] / out["torchattacks_step_s"]
        out["ours_over_torchattacks_min"] = out["pgd_step_min_s"] / min(others)
        print(f"{name}: torchattacks PGD step {out['torchattacks_step_s'] * 1e3:.1f} ms, ours/torchattacks "
              f"{out['ours_over_torchattacks']:.3f} (goal <= 1.0; of the fastest rounds "
              f"{out['ours_over_torchattacks_min']:.3f})", flush=True)
    return out


def whole_volume_memory(model: nn.Module, roi: int, steps: int, device: torch.device) -> float:
    """Peak memory of PGD over a volume of 2x2x2 ROI windows / one window's forward+backward."""
    frozen_eval(model)
    side = roi + int(roi * 0.75)  # 2 windows per axis at overlap 0.25
    x = torch.rand(1, 1, side, side, side, device=device)
    y = torch.randint(0, 3, (1, 1, side, side, side), device=device)
    xw, yw = x[..., :roi, :roi, :roi].clone(), y[..., :roi, :roi, :roi].clone()
    sw = SlidingWindow(model, (roi,) * 3, overlap=0.25, mode="gaussian")
    attack = PGD(Budget.linf(4, unit="1/255", valid_range=(0.0, 1.0)), steps=steps)
    one_window = floor_steps(model, xw, yw, 1)
    whole = lambda: attack(sw, x, y)  # noqa: E731
    for fn in (one_window, whole):  # warm-up: kernels, allocator, importance map
        fn()
    window_peak, _ = peak_bytes(one_window, device)
    attack_peak, seconds = peak_bytes(whole, device)
    ratio = attack_peak / window_peak
    print(f"3D UNet whole volume {side}^3 (8 windows of {roi}^3): one window fwd+bwd {window_peak / 2**20:.1f} MiB, "
          f"PGD-{steps} attack {attack_peak / 2**20:.1f} MiB ({seconds:.1f} s), attack/one window {ratio:.2f} "
          f"(goal <= 1.5)", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="32^3 volume and 4x1x64^2 images (quick check)")
    parser.add_argument("--roi", type=int, default=None, help="ROI side of the memory measurement "
                        "(default 96 on CUDA, 32 on CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    side3, (b2, side2) = (32, (4, 64)) if args.small else (64, (8, 128))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, "
          f"repeats {args.repeats}", flush=True)

    unet = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=2).to(device)
    x3 = torch.rand(1, 1, side3, side3, side3, device=device)
    y3 = torch.randint(0, 3, (1, 1, side3, side3, side3), device=device)
    bench(f"3D UNet 1x1x{side3}^3", unet, x3, y3, args.steps, args.repeats, with_torchattacks=False)
    whole_volume_memory(unet, args.roi or (96 if device.type == "cuda" else 32), 3, device)

    dense = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).to(device)
    x2 = torch.rand(b2, 1, side2, side2, device=device)
    y2 = torch.randint(0, 2, (b2,), device=device)
    bench(f"2D DenseNet121 {b2}x1x{side2}^2", dense, x2, y2, args.steps, args.repeats, with_torchattacks=True)


if __name__ == "__main__":
    main()
