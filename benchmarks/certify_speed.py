"""Time to certify one volume by randomized smoothing (issue 20, "Done when").

Certifies a ``size``^3 volume with the demo's 3D UNet architecture (SegCertify, tau = 0.75,
n0 = n / 10 selection samples plus ``n`` estimation samples) and prints the seconds per volume,
the noise samples per second and the batch size that fitted in memory (halved on OOM). The
network is untrained: the time does not depend on the weights. Volumes larger than ``--roi``
go through SlidingWindow, as in ``medrobust certify``.

    python benchmarks/certify_speed.py                          # small CPU run: n=32 on 32^3
    python benchmarks/certify_speed.py --n 1000 --size 96 --device cuda --batch-size 32   # the GPU check
"""
from __future__ import annotations

import argparse

import torch
from timing import timed  # benchmarks/timing.py (run from benchmarks/ or with it on sys.path)

from medrobust.certify import Smoothed
from medrobust.demo import DEMO_MODEL, DEMO_MODEL_KWARGS
from medrobust.models.registry import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="estimation samples (n0 = max(1, n // 10))")
    parser.add_argument("--size", type=int, default=32, help="side of the cubic volume")
    parser.add_argument("--roi", type=int, default=96, help="sliding-window ROI side")
    parser.add_argument("--batch-size", type=int, default=16, help="noise samples per forward pass to start with")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="run the network in bfloat16 autocast")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(DEMO_MODEL, spatial_dims=3, in_channels=1, out_channels=4, **DEMO_MODEL_KWARGS).to(device).eval()
    x = torch.randn(1, 1, args.size, args.size, args.size, device=device)
    smoothed = Smoothed(model, 0.25, roi_size=(args.roi,) * 3, batch_size=args.batch_size, seed=0)
    n0 = max(1, args.n // 10)

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            smoothed.certify(x, n0=n0, n=args.n, alpha=0.001, tau=0.75)

    smoothed.certify(x, n0=1, n=1, alpha=0.001, tau=0.75)  # warm-up (and the first memory adaptation)
    seconds = timed(run, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}: certified a {args.size}^3 volume with n={args.n} (+ n0={n0}) in {seconds:.2f} s per volume, "
          f"{(args.n + n0) / seconds:.1f} noise samples/s, batch size {smoothed.batch_size}")


if __name__ == "__main__":
    main()
