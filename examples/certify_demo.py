"""Certified Dice against radius for the noise-trained demo segmenter (issue 20).

    .venv/bin/python examples/certify_demo.py --out runs/certify [--sigma 0.25] [--n 200] [--epochs 20] [--quick]

Builds the demo's MNI152 brain-tissue set (``build_demo_segmentation``: 12 train, 4 val,
4 test volumes of 48 x 56 x 48 voxels, GM/WM/CSF; z-scored, so sigma and radii are in
z-score units) and trains the demo segmenter's architecture (``medrobust.demo.DEMO_MODEL``,
``DEMO_MODEL_KWARGS``, ``DEMO_TRAIN`` with ``--epochs``) with the ``gaussian_noise`` recipe at
``--sigma`` (Cohen et al.: the base model sees the noise it will be smoothed with); a finished
run in ``OUT/seg`` with the same settings is reused, also one written by
examples/certify_soundness.py with the same ``--out``. It then certifies every test volume
with per-voxel radii (n0 = n / 10 selection and ``--n`` estimation samples, alpha = 0.001
family-wise over the voxels, Bonferroni) and with SegCertify at tau = 0.75 (Holm). It prints,
per radius, the mean certified Dice over the foreground classes (abstained voxels count as
wrong), the abstain rate and the seconds per volume, and saves the curve to
``OUT/certified_dice.png``. On 2 CPU cores: about 3 minutes of training, then 20-40 s per
volume and mode at n = 200 (8 certifications; seconds per volume are printed).
``--quick`` is a smoke run (4 training volumes, 2 epochs, n = 20): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from certify_soundness import SEG_EPOCHS, train_demo_segmenter  # noqa: E402  (examples/, next to this file)

from medrobust.certify import SegCertificate, Smoothed  # noqa: E402
from medrobust.evaluation.loading import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sigma", type=float, default=0.25, help="noise std in z-score units (training and smoothing)")
    parser.add_argument("--n", type=int, default=200, help="estimation samples per case")
    parser.add_argument("--epochs", type=int, default=SEG_EPOCHS)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 training volumes, 2 epochs, n = 20")
    args = parser.parse_args()
    n = 20 if args.quick else args.n
    torch.manual_seed(0)
    checkpoint, data = train_demo_segmenter(args.out, args.sigma, args.epochs, args.quick)
    lm = load_model(checkpoint, data, "test")
    radii = [float(r) for r in np.linspace(0, 2 * args.sigma, 9)]
    curves: dict[str, list[float]] = {}
    for label, tau in (("per-voxel radii (Bonferroni)", None), ("SegCertify tau=0.75 (Holm)", 0.75)):
        smoothed = Smoothed(lm.model, args.sigma, unit="model", batch_size=50, seed=0)
        dice, abstain, seconds = np.zeros(len(radii)), 0.0, []
        for item in (lm.split.dataset[i] for i in range(len(lm.split.dataset))):
            cert = smoothed.certify(item["image"][None], n0=max(1, n // 10), n=n, alpha=0.001, tau=tau)
            assert isinstance(cert, SegCertificate)
            dice += cert.certified_dice(torch.as_tensor(item["label"]), radii, len(lm.classes)).mean(1).numpy()
            abstain += cert.abstain_rate
            seconds.append(cert.seconds)
        curves[label] = (dice / len(lm.split.dataset)).tolist()
        shape = "x".join(map(str, lm.split.dataset[0]["image"].shape[1:]))
        print(f"{label}: {len(seconds)} test volumes of {shape}, n={n}, n0={max(1, n // 10)}, alpha=0.001, "
              f"sigma={args.sigma}, abstain rate {abstain / len(seconds):.3f}, "
              f"{statistics.mean(seconds):.1f} s per volume (CPU, {torch.get_num_threads()} threads)")
        for r, d in zip(radii, curves[label]):
            print(f"  radius {r:.3f}: mean certified Dice {d:.3f}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, values in curves.items():
        ax.plot(radii, values, marker="o", label=label)
    ax.set(xlabel="L2 radius (z-score units)", ylabel="mean certified Dice", ylim=(0, 1),
           title=f"noise-trained demo UNet, sigma={args.sigma}, n={n}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "certified_dice.png", dpi=120)
    print(f"figure: {args.out / 'certified_dice.png'}")


if __name__ == "__main__":
    main()
