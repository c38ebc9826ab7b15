"""Cost of the GLCM texture term against the backbone it restrains (issue 10, "Done when").

Prints GLCMLoss forward+backward time / backbone forward+backward time, goal <= 0.5 (the
texture term must not dominate training). Measured as in the ``assimilation`` recipe:

- GLCM: ``GLCMLoss()(gray, x)`` with gradient to ``gray`` (B, 1, S, S); both images'
  features are computed every batch (16 levels, distance 3, 8 angles, 20x20 tiles);
- backbone: the registry's 2D resnet18 (MONAI) on (B, 3, S, S), train mode, cross-entropy,
  backward to every parameter. MONAI's first convolution has stride 1, which makes it
  about 4x the cost of torchvision's resnet18; the ratio is also printed against the same
  net with torchvision's stride-2 stem (``conv1_t_stride=2``), the stricter comparison.

Each time is the median of ``--repeats`` runs after one warm-up.

    python benchmarks/glcm_speed.py [--batch 32] [--size 224] [--device cuda] [--threads 2]

On a busy CPU pass smaller sizes (e.g. --batch 8 --size 112); the sizes measured are printed.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import timed  # benchmarks/timing.py

from medrobust.models import build_model
from medrobust.training.glcm import GLCMLoss


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    b, s = args.batch, args.size

    loss_fn = GLCMLoss(levels=args.levels)
    gray = torch.rand(b, 1, s, s, device=device, requires_grad=True)
    target = torch.rand(b, 1, s, s, device=device)

    def glcm_step() -> None:
        gray.grad = None
        loss_fn(gray, target).mean().backward()

    rgb = torch.rand(b, 3, s, s, device=device)
    labels = torch.randint(2, (b,), device=device)

    def backbone_step(net: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(rgb), labels).backward()
        return step

    t_glcm = median_time(glcm_step, device, args.repeats)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"device {device}{threads}; batch {b} x {s}x{s}; "
          f"GLCM {args.levels} levels, distance 3, 8 angles, 20x20 tiles")
    print(f"{'GLCMLoss':<36} {t_glcm * 1e3:9.1f} ms")
    for label, stem in (("registry resnet18, stride-1 stem", 1), ("resnet18, torchvision stride-2 stem", 2)):
        net = build_model("resnet18", spatial_dims=2, in_channels=3, out_channels=2, conv1_t_stride=stem)
        t_net = median_time(backbone_step(net.to(device).train()), device, args.repeats)
        print(f"{label:<36} {t_net * 1e3:9.1f} ms   ratio GLCM / backbone {t_glcm / t_net:.3f} (goal <= 0.5)")


if __name__ == "__main__":
    main()
