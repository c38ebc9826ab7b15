"""``medrobust demo``: the main job end to end on the bundled MNI152 demo data."""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.evaluate import print_summary
from medrobust.demo import clean_dice, demo_model, run_demo_grid
from medrobust.report.html import write_report

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def print_clean_dice(checkpoint: Path) -> None:
    """Print the validation Dice per foreground class stored with the best checkpoint."""
    epoch, dice = clean_dice(checkpoint)
    table = Table(title=f"clean validation Dice (best epoch {epoch}, background excluded)")
    for name in dice:
        table.add_column(name)
    table.add_row(*[f"{v:.3f}" for v in dice.values()])
    console.print(table)


@app.command()
def demo(
    out: Path = typer.Option(Path("medrobust-demo"), "--out", help="Folder for data, model, results and report."),
    max_cases: int = typer.Option(3, "--max-cases", min=1, help="Test cases in the robustness grid."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps: "
                               "where the model trains and the grid runs."),
) -> None:
    """Build the MNI152 demo set, train a small 3D UNet (cached) and run the robustness grid.

    Writes results.sqlite, results.csv and report.html, and prints the summary.
    """
    start = time.perf_counter()
    checkpoint = demo_model(out, device=device)
    print_clean_dice(checkpoint)
    trained = time.perf_counter()
    results = run_demo_grid(checkpoint, out, max_cases, device=device)
    print_summary(results)
    report = write_report(results)
    done = time.perf_counter()
    console.print(f"data + model {trained - start:.0f} s, robustness grid + report {done - trained:.0f} s")
    console.print(f"report: {report}")
