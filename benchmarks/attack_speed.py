"""Speed and memory of the attack loop, measured in one run (issue 4, "Done when").

Prints, for a 3D UNet (64^3 volumes by default) and a 2D DenseNet121 (128^2 images), each
once with one sample (B = 1) and once batched (``--batch`` volumes; 8 images, 4 with ``--small``):

- time per PGD step / floor, where the floor is one forward plus one backward to the input
  only (parameters frozen, eval mode), timed over as many back-to-back steps as the attack
  takes; goal <= 1.10. With ``--amp bf16`` both run the model's forward under
  ``torch.autocast(dtype=torch.bfloat16)`` (our attack keeps its loss, step and projection
  in float32);
- our PGD / torchattacks' PGD on the classifier, same eps/alpha/steps/random start;
  torchattacks always runs in float32, so under ``--amp bf16`` the ratio is our bf16 attack
  against its float32 one; goal <= 1.0. Compared like for like, ours returns the last iterate (``return_best=False``:
  the images torchattacks makes, see tests/attacks/test_torchattacks_parity.py); the
  default, which returns the best iterate and so evaluates the last one with one more
  forward, is printed beside it. Both get a trainable model in train mode, as a user hands
  it over; torchattacks switches to eval mode, ours also freezes and restores the flags;
- peak memory of a whole-volume PGD attack through SlidingWindow over 8 windows (2 per
  axis, overlap 0.25; ROI 96^3 on CUDA, 32^3 on CPU) / peak memory of one window's
  forward + backward to the input, same UNet, parameters frozen; goal <= 1.5. Peaks are
  measured above what was resident before the call (model, volume, labels) by
  ``timing.peak_bytes``; ``sliding_window_memory.py`` breaks the gradient alone down.

Times are medians over ``--repeats`` rounds after a warm-up. Within a round the floor, ours
and torchattacks run back to back, and each ratio is the median of the rounds' own ratios,
so load drift on a shared CPU hits both sides alike (the ratio of the fastest rounds is
printed beside it).
Per-step time = the whole attack's time / steps, so it includes the start point, the
best-iterate tracking and (by default) the final evaluation of the last iterate: one
extra forward per attack, about 1/(3·steps) of the time.

    python benchmarks/attack_speed.py [--device auto|cpu|cuda|cuda:N] [--amp none|bf16] [--steps 10]
        [--repeats 5] [--batch 4] [--small] [--roi 32]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, UNet
from timing import peak_bytes, timed  # benchmarks/timing.py (run from benchmarks/ or with it on sys.path)
from torch import nn

from medrobust.attacks import PGD
from medrobust.models import SlidingWindow
from medrobust.models.devices import check_device, resolve_device
from medrobust.units import Budget


def autocast(device: torch.device, amp: str) -> Any:
    """bfloat16 autocast on ``device`` for ``amp == "bf16"``, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()


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


def trainable(model: nn.Module) -> nn.Module:
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def bench(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int,
          with_torchattacks: bool, amp: str = "none") -> dict[str, float]:
    device = x.device
    budget = Budget.linf(4, unit="1/255", valid_range=(0.0, 1.0))
    floor = floor_steps(model, x, y, steps)
    ours = PGD(budget, steps=steps, step_size=1, random_start=True)

    def under_amp(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with autocast(device, amp):
                return fn()
        return run

    runs: dict[str, Callable[[], object]] = {
        "floor": under_amp(floor),
        # 1/255 per step; the default returns the best iterate (one forward more than the steps)
        "ours": under_amp(lambda: ours(model, x, y)),
    }
    if with_torchattacks:
        from torchattacks.attacks.pgd import PGD as TaPGD  # installed with --no-deps
        theirs = TaPGD(model, eps=4 / 255, alpha=1 / 255, steps=steps, random_start=True)
        last = PGD(budget, steps=steps, step_size=1, random_start=True, return_best=False)
        runs["ours, last iterate"] = under_amp(lambda: last(model, x, y))  # what torchattacks returns
        runs["torchattacks"] = lambda: theirs(x, y)  # float32 always
    times: dict[str, list[float]] = {key: [] for key in runs}
    for i in range(repeats + 1):  # round 0 is the warm-up (allocator, kernels, autotuning)
        for key, fn in runs.items():
            if key == "floor":
                frozen_eval(model)
            else:  # the attacks get what a user hands over: a trainable model
                trainable(model)
            seconds = timed(fn, device) / steps
            if i:
                times[key].append(seconds)
    med = {key: statistics.median(v) for key, v in times.items()}
    fastest = {key: min(v) for key, v in times.items()}

    def ratio(a: str, b: str, goal: str) -> str:  # paired: a and b ran back to back in each round
        paired = statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))
        return f"{paired:.3f} (goal {goal}; of the fastest rounds {fastest[a] / fastest[b]:.3f})"

    precision = "bf16 autocast" if amp == "bf16" else "fp32"
    print(f"{name} [{precision}]: floor {med['floor'] * 1e3:.1f} ms, PGD step {med['ours'] * 1e3:.1f} ms, "
          f"step/floor {ratio('ours', 'floor', '<= 1.10')}", flush=True)
    if with_torchattacks:
        print(f"{name}: torchattacks PGD step (fp32) {med['torchattacks'] * 1e3:.1f} ms; ours ({precision}) returning "
              f"the last iterate (torchattacks' images) {med['ours, last iterate'] * 1e3:.1f} ms, ours/torchattacks "
              f"{ratio('ours, last iterate', 'torchattacks', '<= 1.0')}", flush=True)
        print(f"{name}: ours returning the best iterate (default, one forward more) / torchattacks "
              f"{ratio('ours', 'torchattacks', 'none: +1/(3*steps) expected')}", flush=True)
    return med


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
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="bf16: our attack and the floor run the model's forward under bfloat16 autocast")
    parser.add_argument("--batch", type=int, default=4, help="volumes of the batched 3D UNet measurement")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="32^3 volume and 4x1x64^2 images (quick check)")
    parser.add_argument("--roi", type=int, default=None, help="ROI side of the memory measurement "
                        "(default 96 on CUDA, 32 on CPU)")
    args = parser.parse_args()
    try:
        check_device(args.device, "--device")
    except ValueError as err:
        parser.error(str(err))
    device = resolve_device(args.device)
    torch.manual_seed(0)
    side3, (b2, side2) = (32, (4, 64)) if args.small else (64, (8, 128))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}, "
          f"repeats {args.repeats}, amp {args.amp}", flush=True)

    unet = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=2).to(device)
    for b3 in (1, args.batch):  # one volume, then a batch of them
        x3 = torch.rand(b3, 1, side3, side3, side3, device=device)
        y3 = torch.randint(0, 3, (b3, 1, side3, side3, side3), device=device)
        bench(f"3D UNet {b3}x1x{side3}^3", unet, x3, y3, args.steps, args.repeats, with_torchattacks=False,
              amp=args.amp)
    whole_volume_memory(unet, args.roi or (96 if device.type == "cuda" else 32), 3, device)

    dense = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).to(device)
    for b in (1, b2):  # one image, then a batch
        x2 = torch.rand(b, 1, side2, side2, device=device)
        y2 = torch.randint(0, 2, (b,), device=device)
        bench(f"2D DenseNet121 {b}x1x{side2}^2", dense, x2, y2, args.steps, args.repeats, with_torchattacks=True,
              amp=args.amp)


if __name__ == "__main__":
    main()
