"""One line for an exception that escaped a command: what failed, and which argument it came from."""
from __future__ import annotations

import os
import re


def option_for(filename: str, args: list[str]) -> str | None:
    """The option (``--out``) or positional argument whose path is ``filename`` or holds it.

    Args:
        filename: the file an OSError names.
        args: the command line after ``medrobust``.

    Returns:
        The option name, ``argument N`` for a positional path, or None when no argument
        names that path.

    Example:
        >>> option_for("/tmp/run/model.json", ["train", "--data", "d.json", "--out", "/tmp/run"])
        '--out'
        >>> option_for("/tmp/run", ["evaluate", "grid.yaml"]) is None
        True
    """
    target = os.path.abspath(filename)
    for i, arg in enumerate(args):
        option, value = (arg.split("=", 1) if arg.startswith("--") and "=" in arg
                         else (args[i - 1] if i and args[i - 1].startswith("--") else None, arg))
        if value.startswith("-") or value == "":
            continue
        path = os.path.abspath(value)
        if target == path or target.startswith(path.rstrip(os.sep) + os.sep):
            return option or f"argument {value!r}"
    return None


def describe_error(err: BaseException, args: list[str], debug: bool = False) -> str:
    """The one-line message for ``err`` raised by the command ``args`` runs.

    A ValueError (bad file, argument or budget) already names what is wrong and is kept as
    it is; an OSError is told with its file and, when it comes from one, the argument; any
    other exception is named with its type and the command.

    Args:
        err: the exception.
        args: the command line after ``medrobust``.
        debug: whether the traceback is shown (else the message says how to see it).

    Returns:
        A single line of plain text.

    Example:
        >>> describe_error(IsADirectoryError(21, "Is a directory", "/tmp/out"), ["predict", "--out", "/tmp/out"])
        '--out: /tmp/out: Is a directory'
        >>> describe_error(RuntimeError("Sizes of tensors" + chr(10) + "must match"), ["train", "--data", "d.json"])
        'train failed: RuntimeError: Sizes of tensors must match (run with --debug for the traceback)'
    """
    if isinstance(err, ValueError):
        text = str(err)
    elif isinstance(err, OSError) and err.filename is not None:
        option = option_for(str(err.filename), args)
        reason = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)) and os.path.isfile(err.filename):
            reason = "is a file; give a folder path"
        text = f"{option + ': ' if option else ''}{err.filename}: {reason}"
    else:
        command = next((a for a in args if not a.startswith("-")), "medrobust")
        hint = "" if debug else " (run with --debug for the traceback)"
        text = f"{command} failed: {type(err).__name__}: {err}{hint}"
    return re.sub(r"\s*\n\s*", " ", text).strip()
