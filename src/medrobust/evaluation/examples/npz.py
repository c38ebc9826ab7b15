"""The plain ``.npz`` files beside the store: example slices, corruption thumbnails, Grad-CAM panels.

Plain numeric/str arrays written atomically with ``np.savez_compressed`` and read back with
``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_npz(path: Path, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Write arrays plus plain ``info`` values atomically as a compressed ``.npz``.

    Shared by example slices, corruption thumbnails and Grad-CAM panels. ``info`` values
    are stored as arrays named ``info_<key>``, so they must be numbers, strings or lists of
    them (nothing that needs pickling).

    Args:
        path: the file to write (its folder is created; an existing file is replaced).
        arrays: {name: numeric or string array}.
        info: {key: plain value}.

    Returns:
        ``path``.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import read_npz, write_npz
        >>> path = write_npz(Path(tempfile.mkdtemp()) / "a.npz", {"map": np.eye(2)}, {"classes": ["a", "b"]})
        >>> data = read_npz(path)
        >>> data["map"].tolist(), data["info"]
        ([[1.0, 0.0], [0.0, 1.0]], {'classes': ['a', 'b']})
    """
    from medrobust.data.io import atomic_path  # lazy: data is a sibling part

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            payload: dict[str, Any] = {**arrays, **{f"info_{k}": np.asarray(v) for k, v in info.items()}}
            np.savez_compressed(f, **payload)
    return path


def read_npz(path: Path) -> dict[str, Any]:
    """Read a :func:`write_npz` file (never unpickles): arrays plus ``info`` (plain Python values).

    Args:
        path: a file written by :func:`write_npz`.

    Returns:
        {array name: np.ndarray} plus ``"info"``: {key: Python value} (see :func:`write_npz`
        for an example).

    Raises:
        ValueError: the file holds pickled objects.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import read_npz, write_npz
        >>> path = write_npz(Path(tempfile.mkdtemp()) / "t.npz", {"image": np.zeros((2, 3))}, {"eps": 4.0})
        >>> data = read_npz(path)
        >>> sorted(data), data["image"].shape, data["info"]
        (['image', 'info'], (2, 3), {'eps': 4.0})
    """
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files if not k.startswith("info_")}
        out["info"] = {k[5:]: z[k].tolist() for k in z.files if k.startswith("info_")}
    return out
