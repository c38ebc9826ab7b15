"""``medrobust explain``: Grad-CAM of a classifier on clean and adversarial cases.

Writes, per case, the clean and the adversarial map (each for its own predicted class):
PNG overlays (2D; map in the "jet" colours over the grey image, at the image's own
resolution) or float32 NIfTI maps in [0, 1] on the case's grid with its affine (3D), and
``iou.csv``: the overlap (IoU) of the two maps' top regions per case, and their mean.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from matplotlib import colormaps
from rich.console import Console
from rich.progress import track

from medrobust.attacks.registry import attack_names
from medrobust.cli import app
from medrobust.cli.attack import attack_spec
from medrobust.cli.options import budget_error, refuse_existing
from medrobust.data.io import atomic_path, write_nifti, write_png
from medrobust.data.safe_names import UniqueNames
from medrobust.evaluation.core import attack_for
from medrobust.evaluation.explain import GradCAMExplainer, explain_pair
from medrobust.evaluation.loading import load_model
from medrobust.models.devices import resolve_device
from medrobust.models.inference import infer
from medrobust.units import IntensityMap

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim
ALPHA = 0.4  # weight of the map's colour in a PNG overlay


def overlay(image: torch.Tensor, cam: torch.Tensor, low: float, high: float) -> np.ndarray:
    """RGB overlay ``(3, H, W)`` in 0..255 of a map ``(H, W)`` in [0, 1] on an image ``(C, H, W)``.

    The image is shown over its valid range [low, high] (model units), grey or colour.
    """
    base = ((image.detach().cpu().double() - low) / max(high - low, 1e-12)).clamp(0, 1).numpy()
    rgb = np.repeat(base[:1], 3, axis=0) if base.shape[0] != 3 else base
    heat = np.moveaxis(colormaps["jet"](cam.detach().cpu().numpy())[..., :3], -1, 0)
    return 255.0 * ((1 - ALPHA) * rgb + ALPHA * heat)


def _write_maps(out: Path, slug: str, item: dict[str, Any], images: dict[str, torch.Tensor],
                maps: dict[str, torch.Tensor], low: float, high: float) -> list[str]:
    """PNG overlays (2D) or NIfTI maps on the case's grid (3D), one per key of ``maps``.

    Files are named ``<slug>_<kind>...``; returns the file names.
    """
    if images["clean"].ndim == 4:
        paths = [out / f"{slug}_{kind}.png" for kind in maps]
        for path, kind in zip(paths, maps):
            write_png(path, overlay(images[kind][0], maps[kind][0, 0], low, high))
        return [p.name for p in paths]
    affine = np.asarray(item["meta"].get("grid_affine", item["meta"]["affine"]), dtype=np.float64)
    paths = [out / f"{slug}_{kind}_cam.nii.gz" for kind in maps]
    for path, cam in zip(paths, maps.values()):
        write_nifti(path, cam[0, 0].cpu().numpy().astype(np.float32), affine, dtype=np.float32)
    return [p.name for p in paths]


@app.command()
def explain(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of a classifier (or an ensemble)."),
    data: Path = typer.Option(..., "--data", help="Class-folder root, CSV, or Decathlon-style datalist."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    attack_name: str = typer.Option("pgd", "--attack", help=f"One of: {', '.join(attack_names())}."),
    eps: float = typer.Option(4.0, "--eps", help="Budget radius in --eps-unit."),
    eps_unit: str = typer.Option("1/255", "--eps-unit", help="model, raw, HU or 1/255 of the valid range."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    steps: int = typer.Option(10, "--steps", help="Attack iterations (>= 1)."),
    loss: str | None = typer.Option(None, "--loss", help="Attack loss (default per attack)."),
    step_size: float | None = typer.Option(None, "--step-size", help="In --eps-unit; default 2.5*eps/steps."),
    restarts: int = typer.Option(1, "--restarts", min=1, help="Random restarts."),
    target_layer: str | None = typer.Option(None, "--target-layer", help="Module name for Grad-CAM (default: "
                                               "the last convolutional stage, found automatically)."),
    top: float = typer.Option(0.1, "--top", help="Fraction of voxels that make each map's top region (IoU)."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    seed: int = typer.Option(0, "--seed", help="Seed of random starts."),
    out: Path = typer.Option(..., "--out", help="Folder for the overlays/maps and iou.csv."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps."),
) -> None:
    """Grad-CAM maps of clean and adversarial cases, and the IoU of their top regions."""
    if attack_name.lower() not in attack_names():
        raise ValueError(f"--attack: unknown attack {attack_name!r}; allowed: {', '.join(attack_names())}")
    if not 0 < top <= 1:
        raise ValueError(f"--top: must be in (0, 1], got {top}")
    spec = attack_spec(attack_name, eps, eps_unit, norm, steps, loss, step_size, restarts, 20.0, None, 1.0)
    refuse_existing(out, "--out", force)
    opened = load_model(checkpoint, data, split, max_cases=max_cases)
    if opened.split.task != "classification":
        raise ValueError(f"--checkpoint: {checkpoint} with {data} is a {opened.split.task} task; "
                         "explain needs a classifier (labels per case)")
    target = resolve_device(device)
    ds, model, classes = opened.split.dataset, opened.model.to(target), opened.info.classes
    explainer = GradCAMExplainer(model, target_layer)
    first = ds[0]["image"].unsqueeze(0).to(target)
    try:
        attack_for(spec, eps, first, IntensityMap.from_dict(ds[0]["meta"]["intensity"]))
    except (ValueError, TypeError) as err:
        raise budget_error(err) from None
    explainer(first)  # a bad --target-layer fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    rows, names = [], UniqueNames()  # file names from case ids: safe, unique; iou.csv maps id -> files
    for i in track(range(len(ds)), description=f"Grad-CAM, {attack_name} eps={eps} {eps_unit}", console=console):
        torch.manual_seed(seed + i)
        item = ds[i]
        x, y = item["image"].unsqueeze(0).to(target), torch.as_tensor(item["label"]).reshape(1).to(target)
        budget, attack = attack_for(spec, eps, x, IntensityMap.from_dict(item["meta"]["intensity"]))
        x_adv = attack(model, x, y).detach()
        clean, adv, iou = explain_pair(explainer, x, x_adv, top)
        preds = infer(model, torch.cat([x, x_adv])).argmax(1)
        lo, hi = (float(v.reshape(-1)[0]) for v in budget.range_for(x))
        files = _write_maps(out, names.name(str(item["id"])), item, {"clean": x, "adv": x_adv},
                            {"clean": clean, "adv": adv}, lo, hi)
        rows.append({"id": item["id"], "label": classes[int(y)], "pred_clean": classes[int(preds[0])],
                     "pred_adv": classes[int(preds[1])], f"iou_top{top:g}": f"{float(iou[0]):.4f}",
                     "clean_map": files[0], "adv_map": files[1]})
    mean = float(np.mean([float(r[f"iou_top{top:g}"]) for r in rows]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows + [{"id": "mean", f"iou_top{top:g}": f"{mean:.4f}"}])
    with atomic_path(out / "iou.csv") as tmp:
        tmp.write_text(buf.getvalue())
    layer = explainer.layer_name
    console.print(f"{len(rows)} cases; Grad-CAM layer {layer}; mean IoU of the top {100 * top:g}% regions, "
                  f"clean vs adversarial: {mean:.3f}; written to {out}")
