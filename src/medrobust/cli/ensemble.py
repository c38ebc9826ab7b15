"""``medrobust ensemble``: join trained classifiers into one ensemble checkpoint.

The result is an ordinary checkpoint (architecture "ensemble", the members' specs in its
kwargs, their weights under ``members.<i>.``), so ``predict``, ``attack``, ``explain`` and
the evaluation grid take it like any model; the grid adds the ensemble table (clean,
transfer, joint attack; hard vote, soft vote, mean logits).
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medrobust.cli import app
from medrobust.cli.options import refuse_existing
from medrobust.models.ensemble import build_ensemble

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


@app.command()
def ensemble(
    members: list[Path] | None = typer.Argument(None, help="Member checkpoints (model.json or run folders)."),
    checkpoints: list[Path] | None = typer.Option(None, "--checkpoints", help="Member checkpoints: "
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
