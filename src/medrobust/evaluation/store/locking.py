"""One writer per store (:class:`WriterLock`, ``flock``) and one transaction per row (``_Tx``)."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from medrobust.evaluation.store.schema import StoreError


class WriterLock:
    """An exclusive, non-blocking lock held by one writer of a store (``flock`` on a lock file).

    The lock file is removed on release; the kernel drops the lock of a killed process, so a
    crash never leaves a folder locked. On systems without ``fcntl`` no lock is taken.

    Args:
        path: the lock file (created).

    Raises:
        StoreError: another writer holds the lock.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "results.sqlite.lock"
        >>> first = WriterLock(path)
        >>> try:
        ...     WriterLock(path)
        ... except StoreError as err:
        ...     print("another medrobust process" in str(err))
        True
        >>> first.release(); WriterLock(path).release(); path.exists()
        False
    """

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, -1
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                store = path.with_name(path.name.removesuffix(".lock"))
                raise StoreError(f"results store {store} is being written by another medrobust process (lock "
                                 f"{path}); wait for it to finish, or use another `out` folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:  # released and removed between our open and our lock
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (one row = one transaction)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
