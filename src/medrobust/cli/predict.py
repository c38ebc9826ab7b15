"""``medrobust predict``: label maps (in the source's format and geometry) or class predictions (CSV)."""
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
from medrobust.cli.options import check_out_folder, check_overlap
from medrobust.data.folders import removed_if_empty
from medrobust.data.io import atomic_path, write_json_atomic
from medrobust.data.safe_names import UniqueNames
from medrobust.data.writers import output_note, output_suffix, write_image
from medrobust.evaluation.loading import load_model
from medrobust.models.devices import resolve_device
from medrobust.models.inference import infer

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of a trained run."),
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out: Path = typer.Option(..., "--out", help="Folder for <case>_pred label maps, source format (+ manifest.json) or "
                             "predictions.csv."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap in [0, 1) for volumes larger "
                                  "than the ROI."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps."),
) -> None:
    """Predict every case of a split with a checkpoint.

    Label maps are named after the case ids made safe and unique (a datalist id cannot
    lead a file out of ``--out``); ``manifest.json`` maps each case id to its file.
    """
    check_overlap(overlap, "--overlap")
    check_out_folder(out, "--out")
    opened = load_model(checkpoint, data, split, max_cases=max_cases)
    target = resolve_device(device)
    opened.model.to(target)
    ds, roi = opened.split.dataset, opened.info.roi_size
    with removed_if_empty(out):  # a crash before the first file leaves no empty --out behind
        rows, cases, names = [], [], UniqueNames()
        for i in track(range(len(ds)), description="predicting", console=console):
            item = ds[i]
            logits = infer(opened.model, item["image"].unsqueeze(0).to(target), roi, overlap).cpu()
            if opened.split.task == "segmentation":
                labels = logits.argmax(1)[0].numpy().astype(np.int16)
                affine = np.asarray(item["meta"]["affine"], dtype=np.float64)
                source = item["meta"]["source"]
                name = names.name(str(item["id"]), "_pred" + output_suffix(source))
                write_image(out / name, labels, affine, dtype=np.int16)
                cases.append({"id": item["id"], "prediction": name, "source": source, "format": output_note(source)})
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
        if cases:
            write_json_atomic(out / "manifest.json", {"checkpoint": str(checkpoint), "data": str(data), "split": split,
                                                      "cases": cases})
    console.print(f"{len(ds)} predictions written to {out}")
