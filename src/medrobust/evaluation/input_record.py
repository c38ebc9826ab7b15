"""The data files a grid read, recorded beside its store, so a resumed grid notices a replaced image.

The grid's config hash covers the config and the checkpoints; ``out/provenance.json``
(:mod:`medrobust.data.provenance`) adds the datalist and every image and label file of the
split. A rerun into a store this grid wrote compares them and names each file that changed.
"""
from __future__ import annotations

from pathlib import Path

from medrobust.data.provenance import (
    PROVENANCE_NAME,
    Provenance,
    differences,
    item_files,
    read_provenance,
    stamp_files,
    write_provenance,
)
from medrobust.evaluation.types import LoadedModel


def grid_inputs(loaded: list[LoadedModel]) -> list[str]:
    """The data files the grid's splits read: each datalist and every case's images and labels.

    Args:
        loaded: the grid's models with their opened splits.

    Returns:
        File paths (repeats allowed).
    """
    files: list[str] = []
    for lm in loaded:
        if lm.split.source.is_file():
            files.append(str(lm.split.source))
        files += item_files(getattr(lm.split.dataset, "items", []))
    return files


def changed_inputs(out: Path, loaded: list[LoadedModel]) -> list[str]:
    """The data files that changed since ``out``'s record was written (none when there is no record).

    Args:
        out: the grid's output folder.
        loaded: the grid's models with their opened splits.

    Returns:
        One phrase per changed, added or removed file (:func:`~medrobust.data.provenance.differences`).

    Raises:
        ValueError: the record exists but cannot be read (naming it).
    """
    recorded = read_provenance(out / PROVENANCE_NAME)
    if recorded is None:
        return []
    return differences(recorded, Provenance(inputs=stamp_files(grid_inputs(loaded), recorded)))


def record_inputs(out: Path, loaded: list[LoadedModel]) -> None:
    """Record the stamps of the grid's data files in ``out/provenance.json`` (hashes of unchanged files reused).

    Args:
        out: the grid's output folder (exists).
        loaded: the grid's models with their opened splits.
    """
    path = out / PROVENANCE_NAME
    current = Provenance(inputs=stamp_files(grid_inputs(loaded), read_provenance(path)))
    write_provenance(path, current)
