"""``medrobust predict``: label maps (NIfTI, source affine) or class predictions (CSV)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import track

from medrobust.cli import app
from medrobust.data.io import atomic_path, write_nifti
from medrobust.evaluation.loading import load_model
from medrobust.models.inference import infer

console = Console()


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of a trained run."),
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out: Path = typer.Option(..., "--out", help="Folder for <case>_pred.nii.gz label maps or predictions.csv."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap for volumes larger than the ROI."),
) -> None:
    """Predict every case of a split with a checkpoint."""
    opened = load_model(checkpoint, data, split, max_cases=max_cases)
    ds, roi = opened.split.dataset, opened.info.roi_size
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in track(range(len(ds)), description="predicting", console=console):
        item = ds[i]
        logits = infer(opened.model, item["image"].unsqueeze(0), roi, overlap)
        if opened.split.task == "segmentation":
            labels = logits.argmax(1)[0].numpy().astype(np.int16)
            affine = np.asarray(item["meta"]["affine"], dtype=np.float64)
            write_nifti(out / f"{item['id']}_pred.nii.gz", labels, affine, dtype=np.int16)
        else:
            probs = torch.softmax(logits.float(), 1)[0]
            rows.append({"id": item["id"], "prediction": opened.info.classes[int(probs.argmax())],
                         **{f"p_{c}": f"{float(p):.6f}" for c, p in zip(opened.info.classes, probs)}})
    if rows:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        with atomic_path(out / "predictions.csv") as tmp:
            tmp.write_text(buf.getvalue())
    console.print(f"{len(ds)} predictions written to {out}")
