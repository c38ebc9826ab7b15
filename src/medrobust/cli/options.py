"""Parsers for command-line values shared by several commands."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medrobust.models.devices import check_device, resolve_device


def parse_size(text: str | None, what: str) -> tuple[int, ...] | None:
    """"64,64,64" or "64" -> (64, 64, 64)/(64,); ValueError naming ``what``."""
    if text is None or text == "":
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as err:
        raise ValueError(f"{what}: expected integers like 64,64,64, got {text!r}") from err
    if any(s <= 0 for s in size):
        raise ValueError(f"{what}: sizes must be positive, got {text!r}")
    return size


def parse_floats(text: str, what: str) -> list[float]:
    """"1,2,4" -> [1.0, 2.0, 4.0]; ValueError naming ``what``."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"{what}: expected numbers like 1,2,4, got {text!r}") from err


def parse_json_object(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object given inline or as a path to a .json file."""
    if not text:
        return {}
    raw = Path(text).read_text() if text.endswith(".json") and Path(text).exists() else text
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{what}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def check_out_folder(out: Path, what: str) -> None:
    """Refuse an output folder path that is an existing file (or lies under one).

    Args:
        out: the output folder a command will write into.
        what: the option or key named in the error (``--out``).

    Raises:
        ValueError: naming ``what`` and the file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> file = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = file.write_text("x")
        >>> check_out_folder(file.parent / "new", "--out")
        >>> check_out_folder(file, "--out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --out: .../notes.txt is a file; give a folder path
    """
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{what}: {path} is a file; give a folder path")
            return


def refuse_existing(out: Path, what: str, force: bool) -> None:
    """Refuse a file, or a non-empty output folder unless ``force`` (new results never mix with old ones).

    Args:
        out: the output folder.
        what: the option named in the error (``--out``).
        force: allow a non-empty folder.

    Raises:
        ValueError: naming ``what``.
    """
    check_out_folder(out, what)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{what} {out} exists and is not empty; choose another folder or pass --force")


def check_overlap(overlap: float, what: str) -> None:
    """Refuse a sliding-window overlap outside [0, 1).

    Args:
        overlap: the fraction of a window shared with its neighbour.
        what: the option named in the error (``--overlap``).

    Raises:
        ValueError: naming ``what``.

    Example:
        >>> check_overlap(0.5, "--overlap")
        >>> check_overlap(1.5, "--overlap")
        Traceback (most recent call last):
        ...
        ValueError: --overlap: must be in [0, 1) (the fraction of a window its neighbour shares), got 1.5
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"{what}: must be in [0, 1) (the fraction of a window its neighbour shares), got {overlap:g}")


def _value(args: list[str], option: str) -> str | None:
    """The value given to ``option`` in ``args`` (``--opt V`` or ``--opt=V``), the last one winning."""
    found = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(option + "="):
            found = arg.split("=", 1)[1]
    return found


def check_shared_options(args: list[str]) -> None:
    """Check the options several commands share, before any command runs.

    ``--device`` must exist on this machine; ``--amp fp16`` needs a CUDA device.

    Args:
        args: the command line after ``medrobust``.

    Raises:
        ValueError: naming the option.

    Example:
        >>> check_shared_options(["train", "--device", "cpu", "--amp", "bf16"])
        >>> check_shared_options(["train", "--device", "cpu", "--amp", "fp16"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --amp: fp16 needs a CUDA device, and --device is cpu; use --amp bf16 or none on the CPU
    """
    device = _value(args, "--device")
    if device is not None:
        check_device(device, "--device")
    if _value(args, "--amp") == "fp16":
        name = device or "auto"
        if resolve_device(name).type != "cuda":
            raise ValueError(f"--amp: fp16 needs a CUDA device, and --device is {name}"
                             f"{' (no CUDA here)' if name == 'auto' else ''}; use --amp bf16 or none on the CPU")


def attack_amp(text: str | None) -> bool | None:
    """``--amp`` of the attack commands: ``bf16`` runs the model's forward in bfloat16, ``none`` in float32.

    Args:
        text: the flag's value, or None (not given).

    Returns:
        True for ``bf16``, False for ``none``, None when not given.

    Raises:
        ValueError: any other value, naming ``--amp``.

    Example:
        >>> attack_amp("bf16"), attack_amp("none"), attack_amp(None)
        (True, False, None)
        >>> attack_amp("fp16")
        Traceback (most recent call last):
        ...
        ValueError: --amp: attacks take bf16 or none, got 'fp16' (fp16 gradients need the loss scaling an attack does not do)
    """
    if text is None:
        return None
    if text not in ("bf16", "none"):
        raise ValueError(f"--amp: attacks take bf16 or none, got {text!r} (fp16 gradients need the loss scaling an "
                         "attack does not do)")
    return text == "bf16"


_BUDGET_FLAGS = (("step_size", "--step-size"), ("steps", "--steps"), ("loss", "--loss"), ("restarts", "--restarts"),
                 ("unit", "--eps-unit"), ("norm", "--norm"), ("eps", "--eps"))


def budget_error(err: Exception) -> ValueError:
    """A library error about an attack's budget or options, told in the command line's flags.

    Args:
        err: the error raised while building the attack (its text uses parameter names).

    Returns:
        A ValueError whose text starts with the flag it is about.

    Example:
        >>> budget_error(ValueError("step_size must be >= 0, got -1.0"))
        ValueError('--step-size: step_size must be >= 0, got -1.0')
        >>> str(budget_error(ValueError("eps in 'HU' but the IntensityMap's raw unit is 'raw'; use unit='raw'")))
        "--eps-unit: eps in 'HU' but the IntensityMap's raw unit is 'raw'; use --eps-unit raw"
    """
    text = re.sub(r"\bunit='([^']+)'", r"--eps-unit \1", str(err))
    flag = next((f for word, f in _BUDGET_FLAGS if re.search(rf"\b{word}\b", text)), "--attack")
    return ValueError(f"{flag}: {text}")

