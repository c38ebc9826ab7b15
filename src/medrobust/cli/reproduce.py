"""``medrobust reproduce``: re-measure the seeds' claims and write ``reproduction.html``."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.options import check_out_folder
from medrobust.reproduce.run import check_request, claim_names, reproduce

console = Console(markup=False, highlight=False, soft_wrap=True)
CLAIMS_HELP = "Claims to run (default: all, in this order): " + ", ".join(claim_names()) + "."


@app.command("reproduce")
def reproduce_command(
    claims: list[str] = typer.Argument(None, help=CLAIMS_HELP),
    scale: str = typer.Option("demo", "--scale", help="demo: the bundled demo sets; full: your datalist (--data)."),
    data: Path | None = typer.Option(None, "--data", help="Decathlon dataset.json for --scale full."),
    out: Path = typer.Option(Path("medrobust-reproduce"), "--out", help="Output folder: one folder per claim "
                             "(results.sqlite, result.json), trained models in OUT/models (reused by config "
                             "hash), and OUT/reproduction.html."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run in minutes: tiny data, 1 epoch, few steps; "
                               "verdicts say 'smoke run'."),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Training seeds per trained setting "
                                     "(default 3; 1 with --quick)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Re-measure each seed's claim under one protocol: published vs ours vs the strongest attacks, with a verdict."""
    check_request(claims or [], scale, data)
    check_out_folder(out, "--out")
    results, page = reproduce(claims or [], out, scale=scale, quick=quick, datalist=data, seeds=seeds,
                              progress=progress)
    table = Table(title="claims re-measured")
    for header in ("claim", "effect", "verdict"):
        table.add_column(header)
    for r in results:
        table.add_row(r.title, r.effect.describe(), r.verdict)
    console.print(table)
    console.print(f"page: {page}")
