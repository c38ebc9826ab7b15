"""One run's example file: a 2D slice of the clean and adversarial image, both predictions and the label.

A volume is cut at the slice holding the most foreground in the label (else the central
one); the file is written with :func:`~medrobust.evaluation.examples.npz.write_npz`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medrobust.evaluation.examples.npz import read_npz, write_npz


def slice_index(label: np.ndarray) -> int:
    """Index along the last axis of a 3D label (D, H, W) with the most foreground voxels.

    Args:
        label: an integer label map; foreground is ``label > 0``.

    Returns:
        The index of the slice with the most foreground (the first on ties), or the central
        index when there is no foreground.

    Shape:
        - label: ``(..., W)``, typically ``(D, H, W)``

    Example:
        >>> import numpy as np
        >>> from medrobust.evaluation.examples import slice_index
        >>> label = np.zeros((4, 4, 6), dtype=np.int64)
        >>> label[1:3, 1:3, 4] = 1
        >>> slice_index(label), slice_index(np.zeros((4, 4, 6)))
        (4, 3)
    """
    fg = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else label.shape[-1] // 2


def _plane(a: np.ndarray, spatial_dims: int, idx: int | None) -> np.ndarray:
    """(C, *spatial) or (*spatial) -> a 2D plane (H, W), (H, W, C) for RGB images."""
    if spatial_dims == 3:
        a = a[..., idx]
    if a.ndim == 3:  # channels first
        a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    return a


def save_example(path: Path, *, image: np.ndarray, adversarial: np.ndarray, label: np.ndarray | int,
                 pred_clean: np.ndarray | int, pred_adv: np.ndarray | int, info: dict[str, Any]) -> Path:
    """Write one run's example slice atomically.

    A 3D case is cut at the slice (last axis) with the most labelled foreground, or the
    central slice for a classified volume; a 3-channel image is stored channels last (RGB).

    Args:
        path: the ``.npz`` file to write (its folder is created).
        image: the clean image, float32 in model units (2D or 3D).
        adversarial: the adversarial image, same shape.
        label: (*spatial) integer map (segmentation) or the class int.
        pred_clean: the clean prediction, like ``label``.
        pred_adv: the adversarial prediction, like ``label``.
        info: str/number fields kept beside (model, perturbation, eps, eps_unit, case_id,
            task, clean_score, adv_score, classes (list of str), low, high (valid range)).

    Returns:
        ``path``. The file holds ``image``, ``adversarial`` (float32 planes), ``label``,
        ``pred_clean``, ``pred_adv`` (int16) and ``info`` (with ``slice``: the index, or -1
        for 2D); read it with :func:`load_example`.

    Shape:
        - image, adversarial: ``(C, *spatial)``, spatial 2D or 3D (3D is cut along its last axis)
        - label, pred_clean, pred_adv: ``(*spatial)``, or ``()`` for a class
        - saved planes: the 2D spatial shape ``(H, W)``, or ``(H, W, 3)`` for RGB

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import load_example, save_example
        >>> x = np.random.default_rng(0).random((1, 8, 8, 5), dtype=np.float32)
        >>> label = np.zeros((8, 8, 5), dtype=np.int64)
        >>> label[2:6, 2:6, 1] = 1
        >>> path = save_example(Path(tempfile.mkdtemp()) / "ex.npz", image=x, adversarial=x + 0.01, label=label,
        ...                     pred_clean=label, pred_adv=np.zeros_like(label), info={"case_id": "c1"})
        >>> ex = load_example(path)
        >>> ex["image"].shape, ex["label"].shape, ex["info"]
        ((8, 8), (8, 8), {'case_id': 'c1', 'slice': 1})
    """
    spatial_dims = image.ndim - 1
    seg = np.ndim(label) > 0
    # 3D: the slice with the most labelled foreground, or the central one for a classified volume
    idx = (slice_index(np.asarray(label)) if seg else image.shape[-1] // 2) if spatial_dims == 3 else None
    arrays: dict[str, np.ndarray] = {
        "image": _plane(np.asarray(image, np.float32), spatial_dims, idx),
        "adversarial": _plane(np.asarray(adversarial, np.float32), spatial_dims, idx),
    }
    for key, value in (("label", label), ("pred_clean", pred_clean), ("pred_adv", pred_adv)):
        v = np.asarray(value, dtype=np.int16)
        arrays[key] = v[..., idx] if (seg and idx is not None) else v
    return write_npz(path, arrays, {**info, "slice": -1 if idx is None else idx})


def load_example(path: Path) -> dict[str, Any]:
    """Read an example file written by :func:`save_example`.

    Args:
        path: the example's ``.npz``.

    Returns:
        As :func:`read_npz`: ``image``, ``adversarial``, ``label``, ``pred_clean``,
        ``pred_adv`` and ``info``.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import load_example, save_example
        >>> x = np.zeros((3, 4, 4), dtype=np.float32)  # an RGB image, classified
        >>> path = save_example(Path(tempfile.mkdtemp()) / "ex.npz", image=x, adversarial=x, label=1,
        ...                     pred_clean=1, pred_adv=0, info={"classes": ["benign", "malignant"]})
        >>> ex = load_example(path)
        >>> ex["image"].shape, int(ex["label"]), int(ex["pred_adv"]), ex["info"]["classes"]
        ((4, 4, 3), 1, 0, ['benign', 'malignant'])
    """
    return read_npz(path)
