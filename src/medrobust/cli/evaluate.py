"""``medrobust evaluate`` (robustness grid) and ``medrobust report`` (HTML from results)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.options import attack_amp, check_device, check_out_folder
from medrobust.evaluation.config import load_config, with_overrides
from medrobust.evaluation.grid import STORE_NAME, run_grid, world
from medrobust.evaluation.store import ResultStore
from medrobust.report.html import write_report
from medrobust.report.summary import COMPACT_HEADERS, summarise, summary_scalars
from medrobust.tracking import check_tracker, open_tracker

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def print_summary(results: Path) -> None:
    """Print the report's summary from ``results.sqlite``: one sentence per model, a compact table.

    The table fits 80 columns: model, budget (the largest eps), clean score, worst case,
    normalised AUC of the worst-case curve and the strongest attack.
    """
    with ResultStore(results / "results.sqlite") as store:
        df, models, checks = store.to_dataframe(), store.models(), store.checks_dataframe()
    summaries = summarise(df, {m: v["task"] for m, v in models.items()}, checks)
    if not summaries:
        console.print("no attack results yet")
        return
    for s in summaries:
        console.print(s.sentence, width=min(console.width, 100), soft_wrap=False)
        console.print()
    table = Table(title="worst case at the largest budget", box=box.SIMPLE)
    for header in COMPACT_HEADERS:
        table.add_column(header, overflow="fold", max_width=18)
    for s in summaries:
        table.add_row(*s.row)
    console.print(table, width=80)


@app.command()
def evaluate(
    grid: Path = typer.Argument(..., help="Grid YAML: models, data, perturbations with eps lists, out folder."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html when the grid is done."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps; "
                                      "default: the grid's device: key (cpu when absent)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Cases of equal shape per clean forward "
                                          "pass; default: the grid's batch_size (1). Rows do not depend on it."),
    sw_batch_size: int | None = typer.Option(None, "--sw-batch-size", min=1, help="Windows per sliding-window "
                                             "forward; default: the grid's sw_batch_size (1)."),
    amp: str | None = typer.Option(None, "--amp", help="bf16: every attack runs the model's forward in bfloat16 "
                                   "(loss, step, projection and scores stay float32); none: float32; default: each "
                                   "attack entry's amp: key."),
    log: str = typer.Option("none", "--log", help="Experiment tracking: none, tensorboard (event files in "
                            "OUT/tensorboard; extra medrobust[log]) or mlflow: the grid's summary (clean, mean score "
                            "per perturbation and level, worst case and its AUC)."),
) -> None:
    """Run (or resume) a robustness grid into OUT/results.sqlite, results.csv and report.html.

    A flag given overrides the grid's key of the same name; ``--device`` and ``--amp``
    change the grid's config hash (a results folder resumes only under the same values),
    the batch sizes do not.
    """
    overrides = {"device": device, "batch_size": batch_size, "sw_batch_size": sw_batch_size}
    cfg = with_overrides(load_config(grid), f"{grid} with its command-line flags", amp=attack_amp(amp), **overrides)
    check_out_folder(cfg.out, f"{grid}: out")
    check_tracker(log, "--log")
    if device is None:  # a --device given was checked before the command ran, naming the flag
        check_device(cfg.device, f"{grid}: device")
    out = run_grid(cfg, progress=progress)
    print_summary(out)
    if log != "none" and world()[0] == 0:
        with ResultStore(out / STORE_NAME) as store:
            summary = summary_scalars(store.to_dataframe())
        tracker = open_tracker(log, out / "tensorboard")
        tracker.log(0, summary)
        tracker.close()
    if report:
        console.print(f"report: {write_report(out)}")


@app.command("report")
def report_command(
    results: Path = typer.Argument(..., help="Folder holding results.sqlite (the grid's out folder)."),
    out: Path = typer.Option(None, "--out", help="Where to write the HTML (default RESULTS/report.html)."),
) -> None:
    """Write one self-contained report.html from a results folder."""
    if not (results / "results.sqlite").exists():
        raise ValueError(f"{results}: no results.sqlite here; run `medrobust evaluate GRID.yaml` first")
    console.print(f"report: {write_report(results, out)}")
