"""Soundness of the certificates on the demo models: PGD-L2 below the radius changes nothing (issue 20).

    .venv/bin/python examples/certify_soundness.py --out runs/soundness [--sigma 0.25] [--n 100] [--quick]

Trains the demo's two architectures with the ``gaussian_noise`` recipe (the base model sees
the noise it is smoothed with), or reuses them from ``OUT`` when a finished run with the same
settings is there:

- segmenter: ``medrobust.demo.DEMO_MODEL`` / ``DEMO_MODEL_KWARGS`` (a 3D UNet) on the MNI152
  brain-tissue set (``build_demo_segmentation``: 12 train, 4 val, 4 test volumes of
  48 x 56 x 48 voxels, z-scored), ``DEMO_TRAIN`` with ``--seg-epochs`` (default 20 of its
  30), at ``--sigma`` z-score units;
- classifier: the half-width resnet18 of the classification examples on the 2D lesion
  slices (``build_demo_classification``: 200 train, 50 val, ``--cls-cases`` test images of
  64 x 64, ``minmax:0,255``), ``--cls-epochs`` (default 8, lr 3e-3, batch 16), at
  ``--cls-sigma`` in [0, 1] grey units (default 0.12, about 30 grey levels: at 0.25 the
  lesions, a few tens of grey levels, leave it near chance after a CPU-sized run).

Every test case is then checked by :func:`medrobust.evaluation.soundness.check_soundness`:
CERTIFY (classifier: class and radius) or SegCertify (per voxel, tau = 0.75, Holm over the
voxels), n0 = n / 10 selection and ``--n`` estimation samples, alpha = 0.001; PGD-L2
(``--steps``, cross-entropy away from the certified labels, abstained voxels left out)
against an EOT surrogate of the smoothed model (mean softmax over 8 fixed noise draws) at
0.9 x the certified radius; then the base model and PREDICT (n samples) at the adversarial
point. With tau every certified voxel of a volume has the same radius sigma · Φ⁻¹(tau), so
the segmenter is attacked at 0.9 x that radius and every certified voxel is protected. A
certified prediction that PREDICT changes to another class (not ABSTAIN) is a violation:
there must be none. The same attack at larger multiples of the radius (``--seg-far``,
``--cls-far``) shows that it can change certified predictions; the segmenter needs about
32x, as tau = 0.75 certifies far less than the voxels' p_A (mostly near 1) would give.
Printed per model: cases, certified predictions / voxels, base-model flips, violations,
changes at the larger radii, and the certification time per volume (per image for the
classifier). About 11 minutes on 2 busy CPU cores with the defaults (training included).

``--quick`` is a smoke run (tiny data, 2 epochs, n = 100, 5 steps): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

import medrobust.training.noise_recipe  # noqa: F401  (registers gaussian_noise)
from medrobust.certify import ClassCertificate, SegCertificate, Smoothed
from medrobust.data.demo import build_demo_classification, build_demo_segmentation
from medrobust.demo import DEMO_MODEL, DEMO_MODEL_KWARGS, DEMO_TRAIN
from medrobust.evaluation.loading import load_model
from medrobust.evaluation.soundness import SoundnessCounts, check_soundness
from medrobust.training import TrainConfig, train_model

CLS_MODEL, CLS_KWARGS, CLS_NORMALIZATION = "resnet18", {"widen_factor": 0.5}, "minmax:0,255"
ALPHA, TAU, SHRINK, DRAWS = 0.001, 0.75, 0.9, 8
SEG_EPOCHS = 20  # of the demo's 30


def train_or_reuse(data: Path, arch: str, run: Path, sigma: float, **kwargs: Any) -> Path:
    """Train ``arch`` with gaussian_noise at ``sigma``; resume the run in ``run`` (a finished one
    returns at once) or start over if its settings differ."""
    noise: dict[str, Any] = {"recipe": "gaussian_noise", "recipe_params": {"sigma": sigma, "unit": "model"},
                             "progress": False}
    try:
        result = train_model(data, arch, run, restart=False, **noise, **kwargs)
    except ValueError as err:
        if "--out" not in str(err):
            raise
        print(f"{run}: settings changed, training again")
        result = train_model(data, arch, run, restart=True, **noise, **kwargs)
    print(f"{arch} at {run}: best validation score {result.best_metric:.3f} (epoch {result.best_epoch})")
    return result.checkpoint


def train_demo_segmenter(out: Path, sigma: float, epochs: int, quick: bool) -> tuple[Path, Path]:
    """The demo set under ``out/data-seg`` and the noise-trained demo UNet under ``out/seg``
    (also used by examples/certify_demo.py); returns its model.json and the dataset.json."""
    sizes = {"n_train": 4, "n_val": 1, "n_test": 1} if quick else {}
    data = build_demo_segmentation(out / "data-seg", **sizes)
    config = DEMO_TRAIN.model_copy(update={"epochs": 2 if quick else epochs})
    print(f"\nsegmenter: {DEMO_MODEL} {DEMO_MODEL_KWARGS}, gaussian_noise sigma={sigma}, {config.epochs} epochs "
          f"(lr {config.lr:g}, {config.scheduler}, batch {config.batch_size})")
    return train_or_reuse(data, DEMO_MODEL, out / "seg", sigma, model_kwargs=DEMO_MODEL_KWARGS, config=config), data


def show(counts: SoundnessCounts, unit: str, what: str) -> None:
    print(counts.report())
    classes = [c for c in counts.certificates if isinstance(c, ClassCertificate)]
    maps = [c for c in counts.certificates if isinstance(c, SegCertificate)]
    if classes:
        radii = [c.radius for c in classes if not c.abstained]
        print(f"  radius of the certified images: median {statistics.median(radii) if radii else 0.0:.3f}, "
              f"max {max(radii, default=0.0):.3f} ({unit} L2); abstained on {sum(c.abstained for c in classes)}")
    if maps:
        voxels = sum(c.labels.numel() for c in maps)
        print(f"  certified radius sigma·Φ⁻¹(tau) = {float(maps[0].radius.max()):.3f} ({unit} L2), "
              f"{counts.certified / voxels:.1%} of {voxels} voxels certified")
    print(f"  the attack at 0.9x stayed within {counts.max_ratio:.3f} x the radius")
    threads = f"CPU, {torch.get_num_threads()} threads"
    print(f"  certification: {statistics.mean(counts.seconds):.2f} s per {what} "
          f"(mean of {len(counts.seconds)}, {counts.settings}, {threads})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sigma", type=float, default=0.25, help="segmenter noise std, z-score (training, smoothing)")
    parser.add_argument("--cls-sigma", type=float, default=0.12, help="classifier noise std, [0, 1] grey")
    parser.add_argument("--n", type=int, default=100, help="estimation samples (n0 = n / 10)")
    parser.add_argument("--seg-epochs", type=int, default=SEG_EPOCHS)
    parser.add_argument("--cls-epochs", type=int, default=8)
    parser.add_argument("--cls-cases", type=int, default=12, help="classifier test images (balanced)")
    parser.add_argument("--steps", type=int, default=10, help="PGD iterations")
    parser.add_argument("--seg-far", type=float, nargs="*", default=[32.0], help="segmenter: larger radii, multiples")
    parser.add_argument("--cls-far", type=float, nargs="*", default=[2.0, 8.0], help="classifier: larger radii")
    parser.add_argument("--task", choices=["seg", "cls", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 epochs, n = 100, 5 steps")
    args = parser.parse_args()
    n, steps = (100, 5) if args.quick else (args.n, args.steps)
    n0 = max(1, n // 10)
    print(f"PGD-L2, {steps} steps, at {SHRINK}x the certified radius against the mean softmax over {DRAWS} noise "
          f"draws; alpha={ALPHA}")
    if args.task in ("seg", "both"):
        checkpoint, data = train_demo_segmenter(args.out, args.sigma, args.seg_epochs, args.quick)
        lm = load_model(checkpoint, data, "test")
        smoothed = Smoothed(lm.model, args.sigma, batch_size=25, seed=0)
        volumes = (lm.split.dataset[i]["image"][None] for i in range(len(lm.split.dataset)))
        counts = check_soundness(lm.model, smoothed, volumes, n0=n0, n=n,
                                 alpha=ALPHA, tau=TAU, shrink=SHRINK, far=args.seg_far, draws=DRAWS, steps=steps)
        show(counts, "z-score", "volume")
    if args.task in ("cls", "both"):
        cases = 4 if args.quick else args.cls_cases
        sizes = {"n_train": 32, "n_val": 8, "size": 32} if args.quick else {"n_train": 200, "n_val": 50}
        data = build_demo_classification(args.out / "data-cls", n_test=cases, **sizes)
        epochs = 2 if args.quick else args.cls_epochs
        print(f"\nclassifier: {CLS_MODEL} {CLS_KWARGS}, {CLS_NORMALIZATION}, gaussian_noise sigma={args.cls_sigma}, "
              f"{epochs} epochs (lr 0.003, batch 16)")
        checkpoint = train_or_reuse(data, CLS_MODEL, args.out / "cls", args.cls_sigma, model_kwargs=CLS_KWARGS,
                                    normalization=CLS_NORMALIZATION,
                                    config=TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, seed=0))
        lm = load_model(checkpoint, data, "test")
        smoothed = Smoothed(lm.model, args.cls_sigma, batch_size=100, seed=0)
        items = [lm.split.dataset[i] for i in range(len(lm.split.dataset))]
        counts = check_soundness(lm.model, smoothed, (item["image"][None] for item in items), n0=n0, n=n, alpha=ALPHA,
                                 shrink=SHRINK, far=args.cls_far, draws=DRAWS, steps=steps)
        correct = sum(isinstance(c, ClassCertificate) and c.label == int(item["label"])
                      for c, item in zip(counts.certificates, items))
        show(counts, "[0, 1] grey", "image")
        print(f"  smoothed classifier certified and correct on {correct}/{len(items)} test images")


if __name__ == "__main__":
    main()
