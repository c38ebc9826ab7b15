"""Run provenance: the settings of a run and the content of its input files, so a resume notices changes.

A run folder (``medrobust train``) or results folder (``medrobust evaluate``) keeps a
``provenance.json``: the settings that change the numbers (named as the command line's
flags) and, per input file (datalist, images, labels, checkpoints), its size, modification
time and SHA-256. A file is hashed when first recorded; a later check re-hashes it only when
its size or modification time moved, so checking an unchanged dataset costs one ``stat`` per
file. :func:`differences` names every setting and file that changed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrobust.data.io import image_files, write_json_atomic

PROVENANCE_NAME = "provenance.json"


@dataclass(frozen=True)
class FileStamp:
    """What identifies a file's content: size (bytes), modification time (ns) and SHA-256."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass
class Provenance:
    """The settings of a run and the stamps of its input files (absolute path -> stamp)."""

    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, FileStamp] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stamp_file(path: str | Path, previous: FileStamp | None = None) -> FileStamp:
    """The stamp of ``path``; ``previous``'s hash is reused when size and modification time are unchanged.

    Args:
        path: an existing file.
        previous: the file's recorded stamp, if any.

    Returns:
        The file's :class:`FileStamp`.

    Raises:
        OSError: the file cannot be read (the error names it).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_text("abc")
        >>> stamp = stamp_file(path)
        >>> stamp.size, stamp.sha256[:12]
        (3, 'ba7816bf8f01')
    """
    file = Path(path)
    info = file.stat()
    if previous is not None and (previous.size, previous.mtime_ns) == (info.st_size, info.st_mtime_ns):
        return previous
    return FileStamp(info.st_size, info.st_mtime_ns, _sha256(file))


def stamp_files(paths: Iterable[str | Path], previous: Provenance | None = None) -> dict[str, FileStamp]:
    """Stamps of ``paths`` keyed by absolute path, reusing ``previous``'s hashes of unchanged files.

    Args:
        paths: input files (repeats are stamped once).
        previous: the recorded provenance, if any.

    Returns:
        ``{absolute path: stamp}`` in sorted order.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_text("abc")
        >>> list(stamp_files([path, path])) == [str(path.resolve())]
        True
    """
    old = previous.inputs if previous is not None else {}
    keys = sorted({str(Path(p).resolve()) for p in paths})
    return {k: stamp_file(k, old.get(k)) for k in keys}


def item_files(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The files datalist items read: image (one or a list of channel files) and label paths.

    Args:
        items: datalist items ``{"image": path | [paths], "label": path | int | None, ...}``.

    Returns:
        Their file paths, in item order (integer class labels are not files; a DICOM
        folder stands for its files, a ``.mhd``/``.nhdr`` header for itself and its data
        file: :func:`~medrobust.data.io.image_files`).

    Example:
        >>> item_files([{"image": ["t1.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz"}, {"image": "a.png", "label": 1}])
        ['t1.nii.gz', 't2.nii.gz', 'seg.nii.gz', 'a.png']
    """
    files: list[str] = []
    for item in items:
        image = item["image"]
        for path in [image] if isinstance(image, (str, Path)) else image:
            files += image_files(path)
        if isinstance(item.get("label"), (str, Path)):
            files += image_files(item["label"])
    return files


def read_provenance(path: Path) -> Provenance | None:
    """The provenance recorded at ``path``, or None when there is none.

    Args:
        path: a ``provenance.json``.

    Returns:
        The recorded :class:`Provenance`, or None when the file does not exist.

    Raises:
        ValueError: the file exists but is not a provenance record (naming it).
    """
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Provenance(dict(doc["config"]), {k: FileStamp(**v) for k, v in doc["inputs"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable provenance record ({err}); delete it to record the inputs anew") from None


def write_provenance(path: Path, provenance: Provenance) -> None:
    """Write ``provenance`` to ``path`` atomically (JSON).

    Args:
        path: the ``provenance.json`` to (over)write.
        provenance: the record.
    """
    write_json_atomic(path, {"config": provenance.config,
                             "inputs": {k: asdict(v) for k, v in provenance.inputs.items()}})


def _plain(value: Any) -> Any:
    """Tuples -> lists, so a setting equals its JSON round trip."""
    return json.loads(json.dumps(value, default=str))


def differences(recorded: Provenance, current: Provenance) -> list[str]:
    """Every setting and input file that differs between the recorded and the current run.

    Args:
        recorded: what the run folder recorded.
        current: the run about to start (files stamped with :func:`stamp_files`).

    Returns:
        One phrase per difference (settings first, then files); empty when nothing changed.

    Example:
        >>> old = Provenance({"--seed": 0, "--lr": 0.001}, {"/d/a.nii.gz": FileStamp(10, 1, "aa")})
        >>> new = Provenance({"--seed": 7, "--lr": 0.001}, {"/d/a.nii.gz": FileStamp(10, 2, "bb"),
        ...                                                 "/d/b.nii.gz": FileStamp(5, 1, "cc")})
        >>> differences(old, new)
        ['--seed was 0, now 7', '/d/a.nii.gz changed content', '/d/b.nii.gz is a new input']
    """
    found = []
    for key in sorted(set(recorded.config) | set(current.config), key=str):
        before, now = _plain(recorded.config.get(key)), _plain(current.config.get(key))
        if before != now:
            found.append(f"{key} was {json.dumps(before)}, now {json.dumps(now)}")
    for path in sorted(set(recorded.inputs) | set(current.inputs)):
        before_stamp, now_stamp = recorded.inputs.get(path), current.inputs.get(path)
        if now_stamp is None:
            found.append(f"{path} is no longer an input")
        elif before_stamp is None:
            found.append(f"{path} is a new input")
        elif before_stamp.sha256 != now_stamp.sha256:
            found.append(f"{path} changed content")
    return found
