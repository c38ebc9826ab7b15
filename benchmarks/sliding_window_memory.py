"""Peak memory of a whole-volume input gradient through SlidingWindow vs one window.

Prints, for a 3D UNet (parameters frozen, eval mode) on a volume of n^3 windows:
  one window      forward + backward to the input of a single ROI window (the floor)
  windowed        SlidingWindow.loss_and_input_grad over the whole volume (ours)
  full graph      autograd through monai sliding_window_inference (the naive way)
and the ratios windowed / one window (goal <= 1.5) and full graph / one window.

Each peak is measured above what was resident before the call (model, input, labels),
by ``timing.peak_bytes``. ``benchmarks/attack_speed.py`` measures a whole PGD attack the
same way.

    python benchmarks/sliding_window_memory.py                  # CUDA if present, else CPU
    python benchmarks/sliding_window_memory.py --roi 32 --per-axis 3 --device cpu
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import peak_bytes  # benchmarks/timing.py

from medrobust.models import SlidingWindow, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--roi", type=int, default=None, help="ROI side (default 96 on CUDA, 32 on CPU)")
    parser.add_argument("--per-axis", type=int, default=2, help="windows per axis (2 -> 8 windows)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--channels", default="16,32,64,128", help="UNet channels per level")
    parser.add_argument("--skip-full", action="store_true", help="skip the naive full-graph measurement")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    roi = args.roi or (96 if device.type == "cuda" else 32)
    side = roi + (args.per_axis - 1) * int(roi * (1 - args.overlap))
    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    model = build_model("unet", spatial_dims=3, in_channels=1, out_channels=args.classes, channels=channels,
                        strides=(2,) * (len(channels) - 1)).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sw = SlidingWindow(model, (roi,) * 3, overlap=args.overlap, mode="gaussian")
    x = torch.rand(1, 1, side, side, side, device=device)
    y = torch.randint(0, args.classes, (1, side, side, side), device=device)
    xw, yw = x[..., :roi, :roi, :roi].clone(), y[..., :roi, :roi, :roi].clone()

    def loss_fn(target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda z: F.cross_entropy(z, target, reduction="none").flatten(1).mean(1)

    def one_window() -> None:
        xr = xw.clone().requires_grad_(True)
        torch.autograd.grad(loss_fn(yw)(model(xr)).sum(), xr)

    def windowed() -> None:
        sw.loss_and_input_grad(x, loss_fn(y), keep_logits=False)  # as the attacks call it

    def full_graph() -> None:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(loss_fn(y)(sw(xr)).sum(), xr)

    n_windows = args.per_axis ** 3
    print(f"device {device}, 3D UNet channels {channels}, roi {roi}^3, volume {side}^3, "
          f"{n_windows} windows, overlap {args.overlap}")
    runs = {"one window": one_window, "windowed": windowed}
    if not args.skip_full:
        runs["full graph"] = full_graph
    for fn in runs.values():  # warm-up: cuDNN plans, allocator, importance map
        fn()
    results = {name: peak_bytes(fn, device) for name, fn in runs.items()}
    for name, (peak, seconds) in results.items():
        print(f"  {name:<11} peak {peak / 2**20:9.1f} MiB   {seconds:7.2f} s")
    base = results["one window"][0]
    # what the windowed gradient keeps beside one window: dL/dlogits (K) and dL/dx (C)
    buffers = (args.classes + 1) * side ** 3 * x.element_size()
    print(f"  volume buffers (dL/dlogits, dL/dx): {buffers / 2**20:.1f} MiB")
    print(f"ratio windowed / one window:   {results['windowed'][0] / base:.2f}  (goal <= 1.5)")
    if "full graph" in results:
        print(f"ratio full graph / one window: {results['full graph'][0] / base:.2f}")


if __name__ == "__main__":
    main()
