"""Parsers for command-line values shared by several commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def refuse_existing(out: Path, what: str, force: bool) -> None:
    """Refuse to mix new results into a non-empty output folder unless ``force``."""
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{what} {out} exists and is not empty; choose another folder or pass --force")
