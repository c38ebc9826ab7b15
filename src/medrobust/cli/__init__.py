"""The ``medrobust`` command line (typer + rich).

Every command maps a bad argument or input file (ValueError) to one clear message on
stderr and exit code 2, before writing any output.
"""
from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="medrobust",
    help="Attack, harden and evaluate medical-image models against adversarial and realistic perturbations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # never wrap a file path

# Commands register themselves on `app` when their modules are imported.
from medrobust.cli import attack, corrupt, demo, ensemble, evaluate, explain, predict, pretrain, train, tune  # noqa: E402,F401,E501


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Typer itself answers usage errors (exit 2) and --help; a ValueError from the library
    (bad file, argument or budget) becomes one line on stderr and exit code 2.
    """
    try:
        app(args=argv, prog_name="medrobust")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except (ValueError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
