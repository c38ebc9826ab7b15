"""Resumable training state without pickling.

torch's ``state_dict`` of an optimizer or scheduler is a nested structure of tensors and
plain values. We split it into a flat ``{key: tensor}`` map (saved with safetensors) and a
JSON skeleton in which each tensor is replaced by ``{"__tensor__": key}``. Loading joins
them again. This keeps ``torch.load`` (and so unpickling) out of resume entirely.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medrobust.data.io import atomic_path, write_json_atomic

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


def split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace every tensor in a nested dict/list/tuple by a reference; fill ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "value"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return split_tensors(torch.from_numpy(obj.copy()), tensors, prefix)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(join_tensors(v, tensors) for v in obj[_TUPLE])
        if "__dict__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__dict__"]}
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dict with tensors) as ``state.safetensors`` + ``state.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, tensors, "")
    with atomic_path(folder / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(folder / "state.json", skeleton)


def load_state(folder: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`.

    Args:
        folder: the run's ``last/`` folder.

    Returns:
        The nested state, tensors in place.

    Raises:
        ValueError: a missing, truncated or inconsistent ``state.json`` or
            ``state.safetensors``, naming the file and how to start over.
    """
    hint = "delete it or pass --restart to start the run over"
    try:
        skeleton = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder / 'state.json'}: cannot read the training state to resume from ({err}); "
                         f"{hint}") from None
    weights = folder / "state.safetensors"
    try:
        tensors = load_file(str(weights))
    except (OSError, ValueError, SafetensorError) as err:
        raise ValueError(f"{weights}: cannot read the training state to resume from ({err}); {hint}") from None
    try:
        return join_tensors(skeleton, tensors)
    except KeyError as err:
        raise ValueError(f"{weights}: lacks tensor {err} that {folder / 'state.json'} names; {hint}") from None
