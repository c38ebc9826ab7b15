"""``medrobust pretrain-natural``: a small natural-image backbone, offline and cached.

Parses the options and calls :func:`medrobust.training.pretrain.pretrain_natural`, which
describes the pretext task, the default backbone and the cache.
"""
from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli import app
from medrobust.cli.options import parse_json_object
from medrobust.training.pretrain import pretrain_natural


@app.command("pretrain-natural")
def pretrain_natural_command(
    out: Path = typer.Option(..., "--out", help="Folder for model.json + model.safetensors (reused if the same "
                             "configuration is already there)."),
    backbone: str = typer.Option("resnet18", "--backbone", help="Registry classifier: resnet18/34/50, densenet121, "
                                 "efficientnet-b0."),
    backbone_kwargs: str | None = typer.Option(None, "--backbone-kwargs", help="Extra network kwargs as JSON. "
                                                  "Default for resnets: '{\"widen_factor\": 0.25}' (small); '{}' "
                                                  "is the full width."),
    patch_size: int = typer.Option(32, "--patch-size", help="Square patch side in pixels (8..96)."),
    steps: int = typer.Option(200, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Patches per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (one-cycle schedule)."),
    task: str = typer.Option("both", "--task", help="Pretext labels: both (photo and rotation), photo, rotation."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and patch sampling."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
) -> None:
    """Pretrain a backbone on patches of scikit-image's bundled natural photographs (offline)."""
    kwargs = parse_json_object(backbone_kwargs, "--backbone-kwargs") if backbone_kwargs is not None else None
    pretrain_natural(out, backbone=backbone, backbone_kwargs=kwargs,
                     patch_size=patch_size, steps=steps, batch_size=batch_size, lr=lr, task=task, seed=seed,
                     device=device)
