"""What every grid entry shares: a strict, frozen pydantic model and paths resolved against the grid file.

Relative paths resolve against the grid file's folder (the ``base`` of the validation
context).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path of the grid file made absolute against the validation context's ``base`` folder.

    Args:
        value: the path as written (``~`` expanded), or None.
        info: the validator's info; ``info.context["base"]`` is the grid file's folder.

    Returns:
        The absolute path, or None.
    """
    if value is None:
        return None
    base = Path((info.context or {}).get("base", "."))
    return (base / value).expanduser().resolve() if not value.expanduser().is_absolute() else value.expanduser()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
