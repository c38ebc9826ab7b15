"""``medrobust corrupt``: a corrupted copy of a Decathlon split, as a new Decathlon folder.

Output (``--out``)::

    dataset.json      the source's labels/modality; "test" lists one entry per
                      case x corruption x severity, id ``<case>__<corruption>_s<severity>``
                      (``--preset``: ``<case>__<corruption>_<preset>``, one draw per case)
    imagesTs/         corrupted images, float32, raw units, in the source's format and geometry
                      (NRRD, MHA; NIfTI for NIfTI sources, with their header, and DICOM series)
    labelsTs/         the source labels (checked as every command checks them), copied once
                      per case and shared by its entries (a detached header or DICOM series
                      becomes one file: MHA, NRRD or NIfTI)
    manifest.json     source, seed, table values and every drawn parameter per entry

File names are the ids made safe and unique (:mod:`medrobust.data.safe_names`); the
datalist and the manifest map each id to its files. Everything is checked before anything
is written, and the folder is assembled in a hidden staging folder beside ``--out``, so a
failure leaves no partial output; the staging folder of a killed run is removed by the next run.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medrobust.cli import app
from medrobust.cli.options import parse_floats, refuse_existing
from medrobust.corruptions import CORRUPTION_NAMES, SEVERITY_TABLE, check_name, check_severity, corrupt
from medrobust.corruptions.presets import PRESETS, corrupt_preset
from medrobust.data.datalists import load_decathlon_labels
from medrobust.data.io import VOLUME_FORMATS, DataError, image_format, write_json_atomic
from medrobust.data.nnunet_raw import load_datalist
from medrobust.data.readers import read_image
from medrobust.data.safe_names import UniqueNames
from medrobust.data.transforms import make_dataset
from medrobust.data.writers import copy_image, copy_suffix, output_note, output_suffix, write_image

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim
_STAGE_PREFIX = ".tmp-corrupt-"


def parse_corruptions(text: str) -> list[str]:
    """"motion,spike" -> ["motion", "spike"] (order kept, repeats dropped); ValueError naming --corruptions."""
    names = [check_name(v.strip(), "--corruptions") for v in text.split(",") if v.strip()]
    if not names:
        raise ValueError(f"--corruptions: give at least one of {', '.join(CORRUPTION_NAMES)}")
    return list(dict.fromkeys(names))


def parse_severities(text: str) -> list[int]:
    """"1,3,5" -> [1, 3, 5]; ValueError naming --severities for anything but integers 1-5."""
    out = []
    for v in (v.strip() for v in text.split(",")):
        if v:
            if not v.isdigit():
                raise ValueError(f"--severities: severities are integers 1-5 like 1,3,5, got {v!r}")
            out.append(check_severity(int(v), "--severities"))
    if not out:
        raise ValueError("--severities: give at least one integer 1-5, e.g. 1,3,5")
    return sorted(set(out))


def _check_inputs(data: Path, split: str, max_cases: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The datalist and its items, every file opened (headers only) before any output."""
    if not (data.is_file() and data.suffix.lower() == ".json"):
        raise ValueError(f"--data: {data} is not a dataset.json (Decathlon or nnU-Net raw)")
    items = load_datalist(data, split)[:max_cases]  # case ids unique (see unique_ids)
    doc = json.loads(data.read_text(encoding="utf-8"))
    for it in items:
        images = [it["image"]] if isinstance(it["image"], str) else list(it["image"])
        for path in images + ([it["label"]] if it["label"] else []):
            if image_format(path) not in VOLUME_FORMATS:
                raise DataError(f"{path}: not a volume; corrupt needs NIfTI, NRRD, MetaImage or DICOM series")
    # Labels are published as they are: check them as every other command does (one channel,
    # the image's grid, integer values among the declared classes) before anything is written.
    classes = load_decathlon_labels(data) if "labels" in doc else None
    cases = make_dataset(items, normalization="none", num_classes=len(classes) if classes else None, cache=False)
    for i in range(len(cases)):
        cases[i]  # reading a case checks its image and label
    return doc, items


def parse_preset(text: str | None) -> str | None:
    """The corruption preset named by --preset (None: none); ValueError naming --preset."""
    if text is not None and text not in PRESETS:
        raise ValueError(f"--preset: unknown corruption preset {text!r}; allowed: {', '.join(PRESETS)}")
    return text


def _corrupt_one(image: torch.Tensor, name: str, severity: int | None, preset: str | None,
                 **where: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """``corrupt`` at ``severity``, or the preset's draw of ``name`` (``severity`` None)."""
    if preset is not None:
        return corrupt_preset(image, preset, name, **where)
    assert severity is not None
    return corrupt(image, name, severity, **where)


def _read_case(item: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], list[str]]:
    """(image (C, X, Y, Z) float32 raw units, meta of the first file, image paths)."""
    paths = [item["image"]] if isinstance(item["image"], str) else list(item["image"])
    arrays, meta = [], None
    for p in paths:
        arr, m = read_image(p)
        arrays.append(arr)
        meta = meta or m
    return torch.from_numpy(np.concatenate(arrays)), meta or {}, paths


def _write_entry(stage: Path, stem: str, image: torch.Tensor, meta: dict[str, Any], paths: list[str]) -> list[str]:
    """Write one corrupted case (one file per source file) named after the safe ``stem``.

    Returns the relative image paths.
    """
    arrays, suffix = image.numpy().astype(np.float32), output_suffix(paths[0])
    if len(paths) == 1:  # one file, 3D (C = 1) or 4D
        names = [f"imagesTs/{stem}{suffix}"]
        chunks = [arrays[0] if arrays.shape[0] == 1 else arrays]
    else:  # one file per channel, as in the source
        names = [f"imagesTs/{stem}_{k:04d}{suffix}" for k in range(len(paths))]
        chunks = list(arrays)
    for name, chunk in zip(names, chunks):
        write_image(stage / name, chunk, meta["affine"], header=meta.get("header"), dtype=np.float32)
    return [f"./{n}" for n in names]


def _stage_owner_alive(stage: Path) -> bool:
    """Whether the process that named a staging folder ``.tmp-corrupt-<pid>-<hex>`` still runs.

    A folder named without a pid (by an older medrobust) has no owner left to wait for.
    """
    pid = stage.name.removeprefix(_STAGE_PREFIX).split("-")[0]
    if not pid.isdigit() or os.name == "nt":  # Windows' os.kill would end the process, not probe it
        return pid.isdigit()
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_stages(parent: Path) -> list[Path]:
    """Delete the staging folders that killed ``corrupt`` runs left in ``parent``; live runs' stay.

    Args:
        parent: the folder holding ``--out``.

    Returns:
        The folders removed.
    """
    stale = [p for p in parent.glob(f"{_STAGE_PREFIX}*") if p.is_dir() and not _stage_owner_alive(p)]
    for stage in stale:
        shutil.rmtree(stage, ignore_errors=True)
    return stale


def _publish(stage: Path, out: Path) -> None:
    """Move the staged files into ``out`` (datalist and manifest last)."""
    files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: p.suffix == ".json")
    for path in files:
        dest = out / path.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    shutil.rmtree(stage, ignore_errors=True)


@app.command("corrupt")
def corrupt_command(
    data: Path = typer.Option(..., "--data", help="Decathlon or nnU-Net raw dataset.json of volumes."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    corruptions: str = typer.Option(",".join(CORRUPTION_NAMES), "--corruptions",
                                    help=f"Comma-separated, from: {', '.join(CORRUPTION_NAMES)}."),
    severities: str = typer.Option("1,2,3,4,5", "--severities", help="Comma-separated integers 1-5."),
    seed: int = typer.Option(0, "--seed", help="With case and corruption, fixes every random draw."),
    window: str | None = typer.Option(None, "--window", help="LO,HI raw intensity range the strengths refer "
                                         "to (e.g. the CT window -175,250); default: each case's min..max."),
    through_plane: int | None = typer.Option(None, "--through-plane", min=0, max=2,
                                                help="Slice axis 0-2 (default: the largest spacing)."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    preset: str | None = typer.Option(None, "--preset", help=f"One of {', '.join(PRESETS)}: a published test set's "
                                      "TorchIO transforms (acdc-c: seed 003's motion, spike, ghosting, bias field), "
                                      "one draw per case and corruption, instead of --corruptions and --severities."),
    out: Path = typer.Option(..., "--out", help="New Decathlon folder for the corrupted split."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Corrupt every case of a split at each corruption and severity; write a Decathlon folder + manifest."""
    preset = parse_preset(preset)
    names, levels = parse_corruptions(corruptions), list[int | None](parse_severities(severities))
    if preset is not None:
        names, levels = list(PRESETS[preset]), [None]
    value_range = None
    if window is not None:
        lo_hi = parse_floats(window, "--window")
        if len(lo_hi) != 2 or not lo_hi[1] > lo_hi[0]:
            raise ValueError(f"--window: expected LO,HI with LO < HI, got {window!r}")
        value_range = (lo_hi[0], lo_hi[1])
    refuse_existing(out, "--out", force)
    doc, items = _check_inputs(data, split, max_cases)
    _remove_stale_stages(out.parent)
    stage = out.parent / f"{_STAGE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    entries, manifest_cases = [], {}
    image_names, label_names = UniqueNames(), UniqueNames()  # file names from case ids: safe and unique
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("corrupting", total=len(items) * len(names) * len(levels))
            for item in items:
                image, meta, paths = _read_case(item)
                label = None
                if item["label"]:
                    label = f"./labelsTs/{label_names.name(str(item['id']), copy_suffix(item['label']))}"
                    copy_image(item["label"], stage / label)
                for name in names:
                    for s in levels:
                        out_id = f"{item['id']}__{name}_{preset or f's{s}'}"
                        corrupted, params = _corrupt_one(image, name, s, preset, seed=seed, affine=meta["affine"],
                                                         case_id=str(item["id"]), value_range=value_range,
                                                         through_plane=through_plane)
                        rel = _write_entry(stage, image_names.name(out_id), corrupted, meta, paths)
                        entries.append({"id": out_id, "image": rel[0] if len(rel) == 1 else rel,
                                        **({"label": label} if label else {})})
                        manifest_cases[out_id] = {"source_id": item["id"], "source_image": item["image"],
                                                  "source_label": item["label"], "image": rel, "label": label,
                                                  "corruption": name, "severity": s, "params": params}
                        bar.advance(task)
        kept = {k: v for k, v in doc.items() if k not in ("training", "validation", "test", "numTraining", "numTest")}
        write_json_atomic(stage / "dataset.json", {
            **kept, "name": f"{doc.get('name', data.parent.name)} (corrupted)",
            "description": f"{split} split of {data} corrupted by medrobust ({', '.join(names)}; "
                           f"{f'preset {preset}' if preset else 'severities ' + ', '.join(map(str, levels))}; "
                           f"seed {seed}); see manifest.json",
            "training": [], "validation": [], "test": entries, "numTraining": 0, "numTest": len(entries)})
        write_json_atomic(stage / "manifest.json", {
            "source": str(data.resolve()), "split": split, "seed": seed, "corruptions": names, "severities": levels,
            "reference_range": f"--window {window}" if window else "each case's min..max per channel",
            "through_plane": through_plane, "preset": preset,
            "severity_table": PRESETS[preset] if preset else {n: SEVERITY_TABLE[n] for n in names},
            "images": f"float32 in the source's raw units, {output_note(items[0]['image'])}", "cases": manifest_cases})
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    console.print(f"{len(entries)} corrupted images of {len(items)} cases in {out}; manifest: {out / 'manifest.json'}")
