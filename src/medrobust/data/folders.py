"""Output folders that a failed command does not leave behind empty."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def removed_if_empty(folder: Path, scratch: Sequence[str] = ()) -> Iterator[Path]:
    """Create ``folder`` (and its missing parents); if the block raises, remove what it created and left empty.

    Args:
        folder: the output folder.
        scratch: names of files that do not count as output on failure (e.g. an empty
            results store); they are deleted when nothing else is in ``folder``.

    Yields:
        ``folder``, created.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> try:
        ...     with removed_if_empty(root / "a" / "out") as out:
        ...         raise RuntimeError("crash")
        ... except RuntimeError:
        ...     pass
        >>> list(root.iterdir())
        []
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created and all(p.name in scratch for p in folder.iterdir()):
            for path in folder.iterdir():
                path.unlink()
            for path in created:  # innermost first
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        raise
