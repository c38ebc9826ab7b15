"""``medrobust evaluate`` (robustness grid) and ``medrobust report`` (HTML from results)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.options import check_device, check_out_folder
from medrobust.evaluation.config import load_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.robustness import auc_table, worst_case_curve
from medrobust.evaluation.store import ResultStore
from medrobust.report.html import write_report

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def print_summary(results: Path) -> None:
    """Print the worst-case curve and its normalised AUC per model from ``results.sqlite``."""
    with ResultStore(results / "results.sqlite") as store:
        df = store.to_dataframe()
    if df.empty:
        console.print("no results yet")
        return
    worst = worst_case_curve(df)
    table = Table(title="worst case over attacks (mean over cases; eps 0 = clean)")
    for col in worst.columns:
        table.add_column(str(col))
    for _, row in worst.iterrows():
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    aucs = auc_table(df)
    if isinstance(aucs, pd.DataFrame) and not aucs.empty:
        console.print(aucs.to_string(index=False))


@app.command()
def evaluate(
    grid: Path = typer.Argument(..., help="Grid YAML: models, data, perturbations with eps lists, out folder."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html when the grid is done."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run (or resume) a robustness grid into OUT/results.sqlite, results.csv and report.html."""
    cfg = load_config(grid)
    check_out_folder(cfg.out, f"{grid}: out")
    check_device(cfg.device, f"{grid}: device")
    out = run_grid(cfg, progress=progress)
    print_summary(out)
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
