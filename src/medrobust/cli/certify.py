"""``medrobust certify``: randomized-smoothing certificates of a split, radii in the user's units."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.progress import track

from medrobust.certify import ClassCertificate, SegCertificate, Smoothed, certified_fraction, check_settings
from medrobust.certify.bounds import check_correction
from medrobust.certify.outputs import write_certificate_maps
from medrobust.cli import app
from medrobust.cli.options import check_overlap, parse_floats, refuse_existing
from medrobust.data.io import atomic_path, write_json_atomic
from medrobust.data.safe_names import UniqueNames
from medrobust.evaluation.loading import load_model
from medrobust.models.devices import resolve_device
from medrobust.units import IntensityMap

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim
_FLAGS = {"sigma": "--sigma", "n0": "--n0", "n": "--n", "alpha": "--alpha", "tau": "--tau",
          "correction": "--correction", "unit": "--unit", "batch_size": "--batch-size"}


def _flagged(err: ValueError) -> ValueError:
    """The library's message (it starts with the argument's name) told with the flag."""
    text = str(err)
    return ValueError(f"{_FLAGS.get(text.split(' ', 1)[0], '--sigma')}: {text}")


def _radii(text: str | None, sigma: float) -> list[float]:
    radii = parse_floats(text, "--radii") if text else [0.0, 0.5 * sigma, sigma, 1.5 * sigma, 2.0 * sigma]
    if not radii or any(not r >= 0 for r in radii):
        raise ValueError(f"--radii: radii must be numbers >= 0, got {text!r}")
    return radii


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


@app.command()
def certify(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of the (noise-trained) model."),
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    sigma: float = typer.Option(..., "--sigma", help="Noise standard deviation (> 0) in --unit."),
    unit: str = typer.Option("model", "--unit", help="model, raw, HU (CT windows) or 1/255 of the valid range; "
                             "radii are reported in it."),
    n: int = typer.Option(1000, "--n", help="Estimation samples per case (>= 1)."),
    n0: int = typer.Option(100, "--n0", help="Selection samples per case (>= 1)."),
    alpha: float = typer.Option(0.001, "--alpha", help="Error level in (0, 1); family-wise over a case's voxels."),
    tau: float | None = typer.Option(None, "--tau", help="SegCertify threshold in (0.5, 1] (segmenters); default: "
                                     "per-voxel radii."),
    correction: str | None = typer.Option(None, "--correction", help="holm or bonferroni over voxels; default holm "
                                          "with --tau, bonferroni without."),
    radii: str | None = typer.Option(None, "--radii", help="Radii in --unit to score certified Dice/accuracy at, "
                                     "e.g. 0,10,25; default 0, 0.5, 1, 1.5, 2 times sigma."),
    batch_size: int = typer.Option(64, "--batch-size", help="Noise samples per forward pass; halved when memory "
                                   "runs out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap in [0, 1) for whole volumes."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    out: Path = typer.Option(..., "--out", help="Folder for certify.json, results.csv and NIfTI maps."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Certify every case of a split by randomized smoothing (Cohen et al.; SegCertify for segmenters).

    Writes ``certify.json`` (settings and one record per case), ``results.csv`` (one row
    per case, per radius for segmenters) and, for segmenters, ``<case>_certified.nii.gz``
    (labels, -1 = abstain) and ``<case>_radius.nii.gz`` (radius in --unit, 0 = abstain).
    """
    try:
        check_settings(sigma=sigma, n0=n0, n=n, alpha=alpha, tau=tau)
        if correction is not None:
            check_correction(correction)
    except ValueError as err:
        raise _flagged(err) from None
    grid = _radii(radii, sigma)
    check_overlap(overlap, "--overlap")
    refuse_existing(out, "--out", force)
    lm = load_model(checkpoint, data, split, max_cases=max_cases)
    ds, segmentation = lm.split.dataset, lm.split.task == "segmentation"
    if tau is not None and not segmentation:
        raise ValueError("--tau: applies to segmentation models only; a classifier's radius uses its own bound")
    if len(ds) == 0:
        raise ValueError(f"--split: {data} has no cases in split {split!r}")
    target = resolve_device(device)
    model = lm.model.to(target)
    first = ds[0]
    try:  # built on the first case, so a unit its IntensityMap cannot convert fails before anything is written
        smoothed = Smoothed(model, sigma, unit, IntensityMap.from_dict(first["meta"]["intensity"]),
                            roi_size=lm.info.roi_size, overlap=overlap, batch_size=batch_size, seed=seed)
        smoothed.sigma_model(first["image"].unsqueeze(0))
    except ValueError as err:
        raise _flagged(err) from None
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    names = UniqueNames()
    for i in track(range(len(ds)), description=f"certify sigma={sigma:g} {unit} n={n}", console=console):
        item = ds[i]
        case_id = str(item["id"])
        smoothed.imap = IntensityMap.from_dict(item["meta"]["intensity"])
        cert = smoothed.certify(item["image"].unsqueeze(0).to(target), n0=n0, n=n, alpha=alpha, tau=tau,
                                correction=correction)
        if isinstance(cert, SegCertificate):
            paths = write_certificate_maps(out, names.name(case_id, ""), cert, item["meta"])
            summary = cert.summary(torch.as_tensor(item["label"]), grid, lm.classes)
            records.append({"id": case_id, "abstain_rate": cert.abstain_rate, "seconds": cert.seconds,
                            "correction": cert.correction, "tau": cert.tau, "sigma_model": cert.sigma_model,
                            "max_radius": float(cert.radius.max()), "certified": paths["certified"].name,
                            "radius_map": paths["radius"].name, "by_radius": summary})
            rows += [{"id": case_id, "radius": s["radius"], "unit": unit, "abstain_rate": s["abstain_rate"],
                      "mean_certified_dice": s["mean_certified_dice"],
                      **{f"certified_dice_{c}": d for c, d in s["certified_dice"].items()}} for s in summary]
        else:
            assert isinstance(cert, ClassCertificate)
            y = int(item["label"])
            record = {"id": case_id, "true_class": lm.classes[y], **cert.to_dict(),
                      "certified_class": None if cert.abstained else lm.classes[cert.label],
                      "correct": cert.certified_correct(y, 0.0)}
            records.append(record)
            rows.append({k: record[k] for k in ("id", "true_class", "certified_class", "radius", "unit", "p_lower",
                                                "correct", "seconds")})
    settings = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "sigma": sigma, "unit": unit,
                "n": n, "n0": n0, "alpha": alpha, "tau": tau, "correction": correction, "radii": grid,
                "batch_size": batch_size, "seed": seed, "overlap": overlap, "task": lm.split.task,
                "abstain_label": -1}
    write_json_atomic(out / "certify.json", {**settings, "cases": records})
    _write_csv(out / "results.csv", rows)
    if segmentation:
        means = [sum(r["by_radius"][j]["mean_certified_dice"] for r in records) / len(records) for j in range(len(grid))]
        told = ", ".join(f"r={r:g}: {m:.3f}" for r, m in zip(grid, means))
        console.print(f"{len(records)} cases certified (n={n}); mean certified Dice by radius ({unit}): {told}")
    else:
        fractions = certified_fraction([r["radius"] for r in records], [r["correct"] for r in records], grid)
        told = ", ".join(f"r={r:g}: {f:.3f}" for r, f in zip(grid, fractions))
        console.print(f"{len(records)} cases certified (n={n}); certified accuracy by radius ({unit}): {told}")
    console.print(f"results: {out / 'certify.json'}, {out / 'results.csv'}")
