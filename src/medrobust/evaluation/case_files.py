"""Per-case files a grid entry names with ``{id}``: region masks and target label maps.

One reader for both, so they resolve the case id, refuse a missing file and check the
grid the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medrobust.data.safe_names import safe_name

__all__ = ["read_case_map"]


def read_case_map(pattern: str, case_id: str, spatial: tuple[int, ...], what: str) -> tuple[np.ndarray, Path]:
    """The image file of ``pattern`` for one case (NIfTI, NRRD, MHA, ...), on the grid the model sees.

    Args:
        pattern: a path with ``{id}`` (replaced by the case id's safe name, as outputs are named).
        case_id: the case id.
        spatial: the case's spatial shape the map must have.
        what: the key and kind of file for messages, e.g. ``"region: mask file"``.

    Returns:
        (the array, float32 as stored, shape ``spatial``; its path).

    Raises:
        ValueError: the file is missing or its shape is not ``spatial`` (naming ``what``).

    Example:
        >>> read_case_map("/no/such/{id}.nii.gz", "c1", (4, 4), "region: mask file")
        Traceback (most recent call last):
            ...
        ValueError: region: mask file /no/such/c1.nii.gz (case 'c1') does not exist
    """
    path = Path(pattern.replace("{id}", safe_name(case_id)))
    if not path.is_file():
        raise ValueError(f"{what} {path} (case {case_id!r}) does not exist")
    from medrobust.data.readers import read_image  # lazy: MONAI and SimpleITK; a config stays light

    data, _ = read_image(path)
    data = data[0] if data.shape[0] == 1 else data  # one channel: the map itself
    if tuple(data.shape) != tuple(spatial):
        raise ValueError(f"{what} {path} has shape {tuple(data.shape)}, the image {tuple(spatial)} (per-case maps "
                         "must be on the grid the model sees; resampled cases need resampled maps)")
    return data, path
