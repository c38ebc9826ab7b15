"""``medrobust attack``: adversarial images of a split, with a manifest of what was done."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import track

from medrobust.attacks.registry import ATTACK_NAMES, get_attack
from medrobust.cli import app
from medrobust.cli.checkpoints import open_model_and_data
from medrobust.cli.options import parse_size, refuse_existing
from medrobust.data.io import read_nifti, write_json_atomic, write_nifti
from medrobust.metrics import dice_per_class, perturbation_norms
from medrobust.models.inference import infer, windowed
from medrobust.units import IntensityMap, budget_for_case

console = Console()


def attack_options(steps: int, loss: Optional[str], step_size: Optional[float], restarts: int,
                   q_max: float, block_size: Optional[str], ssim_weight: float, attack: str) -> dict[str, Any]:
    """Keyword options for :func:`get_attack` from the command line's flat flags."""
    if attack.startswith("vafa"):
        opts: dict[str, Any] = {"steps": steps, "q_max": q_max, "ssim_weight": ssim_weight}
        size = parse_size(block_size, "--block-size")
        if size is not None:
            opts["block_size"] = size
        return opts
    opts = {"steps": steps, "restarts": restarts}
    if loss:
        opts["loss"] = loss
    if step_size is not None:
        opts["step_size"] = step_size
    return opts


def _score(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
    if y.ndim == 1:
        return {"correct": bool(logits.argmax(1).eq(y).item())}
    dice = dice_per_class(logits, y, num_classes)[0]
    return {"dice": [float(v) for v in dice], "dice_mean": float(dice.nanmean())}


@app.command()
def attack(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of the model to attack."),
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    attack_name: str = typer.Option("pgd", "--attack", help=f"One of: {', '.join(ATTACK_NAMES)}."),
    eps: float = typer.Option(4.0, "--eps", help="Budget radius in --eps-unit (voxel attacks; std for gaussian)."),
    eps_unit: str = typer.Option("1/255", "--eps-unit", help="model, raw, HU (CT windows) or 1/255 of the valid range."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    steps: int = typer.Option(20, "--steps", help="Attack iterations (>= 1)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="ce, dice, dice_ce, segpgd, cospgd, dlr (default per attack)."),
    step_size: Optional[float] = typer.Option(None, "--step-size", help="In --eps-unit; default 2.5*eps/steps."),
    restarts: int = typer.Option(1, "--restarts", min=1, help="Random restarts; the strongest is kept per case."),
    q_max: float = typer.Option(20.0, "--q-max", help="VAFA: largest quantisation step, in (valid range)/255."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help="VAFA: DCT block, e.g. 32,32,32 or 32,32."),
    ssim_weight: float = typer.Option(1.0, "--ssim-weight", help="VAFA: weight of the SSIM term (>= 0)."),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap for whole volumes."),
    max_cases: Optional[int] = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    seed: int = typer.Option(0, "--seed", help="Seed of random starts."),
    out: Path = typer.Option(..., "--out", help="Folder for adversarial NIfTIs (raw units, source affine) + manifest.json."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Attack every case of a split and save the adversarial images with a manifest."""
    if attack_name not in ATTACK_NAMES:
        raise ValueError(f"--attack: unknown attack {attack_name!r}; allowed: {', '.join(ATTACK_NAMES)}")
    options = attack_options(steps, loss, step_size, restarts, q_max, block_size, ssim_weight, attack_name)
    refuse_existing(out, "--out", force)
    opened = open_model_and_data(checkpoint, data, split, max_cases=max_cases)
    ds, classes, roi = opened.split.dataset, opened.info.classes, opened.info.roi_size
    # Built once on the first case so a bad eps, unit or option fails before anything is written.
    first = ds[0]
    get_attack(attack_name, budget_for_case(norm, eps, eps_unit, first["image"].unsqueeze(0),
                                            IntensityMap.from_dict(first["meta"]["intensity"])), **options)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in track(range(len(ds)), description=f"{attack_name} eps={eps} {eps_unit}", console=console):  # type: ignore[arg-type]
        torch.manual_seed(seed + i)
        item = ds[i]
        x, y = item["image"].unsqueeze(0), torch.as_tensor(item["label"]).unsqueeze(0)
        imap = IntensityMap.from_dict(item["meta"]["intensity"])
        budget = budget_for_case(norm, eps, eps_unit, x, imap)
        model = windowed(opened.model, x, roi, overlap)
        x_adv = get_attack(attack_name, budget, **options)(model, x, y)
        clean, adv = infer(model, x), infer(model, x_adv)
        norms = {k: float(v[0]) for k, v in perturbation_norms(x, x_adv, imap).items()}
        case: dict[str, Any] = {"id": item["id"], "source": item["meta"]["source"], **norms,
                                "clean": _score(clean, y, len(classes)), "adversarial": _score(adv, y, len(classes))}
        if opened.split.task == "segmentation" and str(item["meta"]["source"]).endswith((".nii", ".nii.gz")):
            raw, meta = read_nifti(item["meta"]["source"])
            delta_raw = imap.model_to_raw(x_adv[0]) - imap.model_to_raw(x[0])
            adv_raw = raw + delta_raw.numpy().reshape(raw.shape)
            path = out / f"{item['id']}_adv.nii.gz"
            write_nifti(path, adv_raw.astype(np.float32), meta["affine"], header=meta["header"])
            case["image"] = path.name
        cases.append(case)
    manifest = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "attack": attack_name,
                "options": options, "budget": {"norm": norm, "eps": eps, "unit": eps_unit}, "seed": seed,
                "images": "raw units (source intensities + perturbation), float32, source affine and header",
                "cases": cases}
    write_json_atomic(out / "manifest.json", manifest)
    summary = [c["adversarial"].get("dice_mean", c["adversarial"].get("correct")) for c in cases]
    console.print(f"{len(cases)} cases attacked; adversarial score per case: {summary}; manifest: {out / 'manifest.json'}")
