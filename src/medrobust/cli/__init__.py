"""The ``medrobust`` command line (typer + rich).

Every command maps a bad argument or input file (ValueError) to one clear message on
stderr and exit code 2, before writing any output.
"""
from __future__ import annotations

import sys

import click
import typer
from rich.console import Console

app = typer.Typer(
    name="medrobust",
    help="Attack, harden and evaluate medical-image models against adversarial and realistic perturbations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)

# Commands register themselves on `app` when their modules are imported.
from medrobust.cli import attack, demo, predict, train  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        err.show()
        return 2
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 1
    except (ValueError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
