"""The ``medrobust`` command line (typer + rich).

Every command maps a bad argument or input file to one plain-text line on stderr and exit
code 2, before writing any output; any other exception that escapes a command becomes one
line too (naming the argument whose file failed, when it can), with the traceback shown
only when ``--debug`` is given.
"""
from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console

from medrobust.cli.errors import describe_error
from medrobust.cli.options import check_shared_options

app = typer.Typer(
    name="medrobust",
    help="Attack, harden and evaluate medical-image models against adversarial and realistic perturbations. "
         "Add --debug anywhere to see the traceback of an error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# never wrap a file path; never read markup in a message (a path may hold "[/x]")
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)

# Commands register themselves on `app` when their modules are imported.
from medrobust.cli import (  # noqa: E402,F401,E501
    attack,
    certify,
    corrupt,
    demo,
    ensemble,
    evaluate,
    explain,
    inspect_model,
    predict,
    pretrain,
    reproduce,
    train,
    tune,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Typer itself answers usage errors (exit 2) and --help. The options several commands
    share (``--device``, ``--amp``) are checked before the command runs. An exception from
    the command becomes one line on stderr and exit code 2 (``--debug``, anywhere in
    ``argv``, adds the traceback).

    Args:
        argv: the arguments after ``medrobust`` (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for bad input or a failed command, typer's code otherwise.

    Example:
        >>> main(["predict", "--checkpoint", "missing/model.json", "--data", "d.json", "--out", "o"])  # stderr:
        2
        >>> # error: missing/model.json: checkpoint file not found
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        check_shared_options(args)
        app(args=args, prog_name="medrobust")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except Exception as err:  # every failure of a command: one line, exit 2
        if debug:
            err_console.print(traceback.format_exc().rstrip())
        err_console.print(f"error: {describe_error(err, args, debug)}", style="bold red")
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
