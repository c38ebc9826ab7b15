"""``medrobust ensemble``: join trained classifiers into one ensemble checkpoint.

The result is an ordinary checkpoint (architecture "ensemble", the members' specs in its
kwargs, their weights under ``members.<i>.``), so ``predict``, ``attack``, ``explain`` and
the evaluation grid take it like any model; the grid adds the ensemble table (clean,
transfer, joint attack; hard vote, soft vote, mean logits).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console

from medrobust.cli import app
from medrobust.cli.options import refuse_existing
from medrobust.models.checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint_info, save_checkpoint
from medrobust.models.ensemble import ENSEMBLE_MODES, Ensemble

console = Console()


def _differ(infos: list[CheckpointInfo], what: str, value: Callable[[CheckpointInfo], Any], allowed: str = "") -> None:
    """ValueError listing each file's value when the members disagree on ``what``."""
    values = [value(i) for i in infos]
    if any(v != values[0] for v in values):
        listing = "; ".join(f"{i.path}: {v}" for i, v in zip(infos, values))
        raise ValueError(f"--checkpoints: the members differ in {what} ({listing}){allowed}")


def _names(paths: list[Path]) -> list[str]:
    """A name per member: its run folder's name, numbered when two agree."""
    base = [(p.parent.name or p.stem) if p.name == "model.json" else p.stem for p in paths]
    return [f"{n}-{i}" if base.count(n) > 1 else n for i, n in enumerate(base)]


def build_ensemble(checkpoints: list[Path], out: Path, mode: str = "mean_logits") -> Path:
    """Write ``out/model.json`` + ``model.safetensors`` of the ensemble of ``checkpoints``.

    Members must agree on the class names (and so the class count), spatial dims, input
    channels and intensity normalisation; the ensemble keeps them, and records each member's
    name, checkpoint and architecture in ``extra["members"]``.

    Raises:
        ValueError: fewer than two members, an unknown mode, or members that disagree (the
            message lists every file with its value); nothing is written then.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"--mode: must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    if len(checkpoints) < 2:
        raise ValueError(f"--checkpoints: an ensemble needs at least two member checkpoints, got {len(checkpoints)}")
    paths = [p / "model.json" if p.is_dir() else p for p in checkpoints]
    infos = [read_checkpoint_info(p) for p in paths]
    _differ(infos, "class count", lambda i: len(i.classes), "; an ensemble averages one output per class")
    _differ(infos, "class names", lambda i: i.classes)
    _differ(infos, "spatial dims", lambda i: i.spatial_dims)
    _differ(infos, "input channels", lambda i: i.in_channels)
    _differ(infos, "intensity normalisation", lambda i: ((i.extra or {}).get("normalization"),
                                                         i.intensity.to_dict() if i.intensity else None),
            "; the ensemble feeds every member the same image")
    _differ(infos, "image size", lambda i: (i.extra or {}).get("image_size"))
    models = [load_checkpoint(p)[0] for p in paths]
    first = infos[0]
    names = _names(paths)
    members = [{"name": n, "checkpoint": str(p.resolve()), "architecture": i.architecture, "recipe": i.recipe}
               for n, p, i in zip(names, paths, infos)]
    extra = {k: v for k, v in (first.extra or {}).items() if k in ("normalization", "image_size")}
    rois = {i.roi_size for i in infos}
    return save_checkpoint(out, Ensemble(models, mode=mode), classes=first.classes, intensity=first.intensity,
                           roi_size=rois.pop() if len(rois) == 1 else None, recipe="ensemble",
                           extra={**extra, "members": members})


@app.command()
def ensemble(
    members: Optional[List[Path]] = typer.Argument(None, help="Member checkpoints (model.json or run folders)."),
    checkpoints: Optional[List[Path]] = typer.Option(None, "--checkpoints", help="Member checkpoints: "
                                                     "`--checkpoints a.json b.json c.json` (or the flag repeated)."),
    out: Path = typer.Option(..., "--out", help="Folder for the ensemble's model.json + model.safetensors."),
    mode: str = typer.Option("mean_logits", "--mode", help="What the ensemble outputs and attacks differentiate: "
                             "mean_logits or mean_probs (log of the mean softmax)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Join trained classifiers into one ensemble checkpoint (predict, attack, explain and evaluate take it)."""
    # Click options take one value each: `--checkpoints a b c` gives a to the option and b, c
    # to the argument list, so both are read, option values first.
    paths = list(checkpoints or []) + list(members or [])
    refuse_existing(out, "--out", force)
    path = build_ensemble(paths, out, mode)
    console.print(f"ensemble of {len(paths)} members ({mode}): {path}")
