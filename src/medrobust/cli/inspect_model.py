"""``medrobust inspect-model``: what a model source holds, before any attack runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.options import parse_json_object
from medrobust.models.sources import SOURCE_KINDS, SourceModel, guess_kind, load_source

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def describe(model: SourceModel) -> list[tuple[str, str]]:
    """(field, value) lines that ``inspect-model`` prints for a loaded source.

    Args:
        model: the loaded source.

    Returns:
        Source, architecture (+ parameter count), task, classes, spatial dims, input
        channels, spacing, intensity map, data normalisation, ROI and notes.

    Example:
        >>> from medrobust.models.sources import load_source
        >>> m = load_source("python", "torch.nn:Conv2d", classes=["bg", "fg"], normalization="ct:-175,250",
        ...                 kwargs={"in_channels": 1, "out_channels": 2, "kernel_size": 1})
        >>> dict(describe(m))["intensity map"]
        'x_model = (x_HU - -175) / 425, clipped to [0, 1] model units'
    """
    info, imap = model.info, model.intensity
    params = sum(p.numel() for p in model.network.parameters())
    if imap is not None:
        clip = f", clipped to [{imap.clip[0]:g}, {imap.clip[1]:g}] model units" if imap.clip else ""
        intensity = f"x_model = (x_{imap.raw_unit} - {float(imap.offset):g}) / {float(imap.scale):g}{clip}"
    else:
        intensity = "per case (from each image's statistics)" if model.normalization else "the data's default"
    lines = [("source", f"{model.kind} {info.path}"), ("architecture", f"{info.architecture} ({params:,} parameters)"),
             ("task", model.task), ("classes", ", ".join(model.classes)),
             ("spatial dims", str(info.spatial_dims or "not stated")),
             ("input channels", str(info.in_channels or "not stated")),
             ("spacing (mm)", " x ".join(f"{s:g}" for s in model.spacing) if model.spacing else "not stated"),
             ("intensity map", intensity), ("data normalization", model.normalization or "the data's default"),
             ("ROI", " x ".join(map(str, info.roi_size)) if info.roi_size else "whole image")]
    return lines + [("note", note) for note in model.notes]


@app.command("inspect-model")
def inspect_model(
    source: str = typer.Argument(..., help="model.json, a MONAI bundle folder, an nnU-Net result folder, "
                                 "a TorchScript file or package.module:factory."),
    kind: str = typer.Option("auto", "--kind", help=f"auto or one of: {', '.join(SOURCE_KINDS)}."),
    classes: str | None = typer.Option(None, "--classes", help="Class names, comma-separated (python, torchscript; "
                                       "overrides a bundle's)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights (.safetensors or a state dict)."),
    kwargs: str | None = typer.Option(None, "--kwargs", help="Factory keyword arguments as JSON (python)."),
    normalization: str | None = typer.Option(None, "--normalization", help="Data normalisation spec "
                                             "(python, torchscript): ct:LO,HI, zscore, linear-hu:OFFSET,SCALE,LO,HI, ..."),
    fold: str | None = typer.Option(None, "--fold", help="nnU-Net fold (0-4 or all)."),
    configuration: str | None = typer.Option(None, "--configuration", help="nnU-Net configuration (3d_fullres, ...)."),
    mirror: bool = typer.Option(False, "--mirror", help="nnU-Net: mirroring test-time augmentation inside the model."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow a TorchScript file, whose code runs when loaded."),
) -> None:
    """Load a model from its source and print its architecture, classes, spacing, intensity map and ROI."""
    chosen = guess_kind(source) if kind == "auto" else kind
    options: dict[str, Any] = {
        "classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None, "weights": weights,
        "kwargs": parse_json_object(kwargs, "--kwargs") if kwargs else None, "normalization": normalization,
        "fold": fold,
        "configuration": configuration, "mirror": mirror or None, "trust_code": trust_code or None}
    model = load_source(chosen, source, **{k: v for k, v in options.items() if v is not None})
    table = Table(title=f"model source: {source}", show_header=False)
    for field, value in describe(model):
        table.add_row(field, value)
    console.print(table)
