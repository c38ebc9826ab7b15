"""Reading a store: the reading methods of a ResultStore, and read-only functions on a file.

:class:`StoreReader` is the base class of :class:`~medrobust.evaluation.store.ResultStore`
(counts, finished keys, the runs as a dataframe, CSV); :func:`stored_config_hash` and
:func:`load_ensemble_runs` read a file without opening a store.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.evaluation.store.schema import _JSON_COLUMNS, ENSEMBLE_COLUMNS, KEY_COLUMNS, RunKey, StoreError


def stored_config_hash(path: str | Path) -> str | None:
    """The config hash recorded in an existing store, or None when there is no store yet.

    The file is opened read-only, so a running grid is not disturbed.

    Args:
        path: the ``results.sqlite`` file (it may not exist).

    Returns:
        The 16-hex hash of the grid that wrote the store, or None when the file does not
        exist or holds no hash (a store opened without ``config_hash``).

    Raises:
        StoreError: the file exists but is not a medrobust store.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.store import ResultStore, stored_config_hash
        >>> path = Path(tempfile.mkdtemp()) / "results.sqlite"
        >>> stored_config_hash(path) is None
        True
        >>> ResultStore(path, config_hash="0123456789abcdef").close()
        >>> stored_config_hash(path)
        '0123456789abcdef'
    """
    path = Path(path)
    if not path.exists():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'config_hash'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"results store {path} is not a medrobust store ({exc})") from None
    finally:
        con.close()
    return row[0] if row else None


class StoreReader:
    """The reading methods of :class:`~medrobust.evaluation.store.ResultStore`, its base class.

    Each reads ``con``, the SQLite connection the store opened.
    """

    con: sqlite3.Connection

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        """The number of rows in ``runs``."""
        return int(self.con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def done_keys(self) -> set[RunKey]:
        """Keys ``(model, perturbation, eps_stated, case_id)`` of the finished runs.

        Returns:
            A set of :data:`RunKey` tuples, ``eps_stated`` as float, for skipping finished
            runs on resume (see the :class:`~medrobust.evaluation.store.ResultStore` example).
        """
        return {(m, p, float(e), c) for m, p, e, c in self.con.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM runs")}

    def ensemble_done_keys(self, model: str) -> set[tuple[str, float, str]]:
        """``(perturbation, eps_stated, case_id)`` of the finished ensemble runs of ``model``.

        Args:
            model: the ensemble's name.

        Returns:
            A set of ``(perturbation, eps_stated, case_id)`` tuples (see
            :meth:`~medrobust.evaluation.store.ResultStore.add_ensemble_rows`).
        """
        rows = self.con.execute("SELECT DISTINCT perturbation, eps_stated, case_id FROM ensemble_runs WHERE model = ?",
                                (model,))
        return {(p, float(e), c) for p, e, c in rows}

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as {key: value}: ``config_hash``, ``config_json``, ``created``."""
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def to_dataframe(self) -> pd.DataFrame:
        """All runs, ordered by insertion; JSON columns decoded into dicts (or None).

        Returns:
            One row per run: ``id`` then the columns of :data:`RUN_COLUMNS`; the input of
            every function of :mod:`medrobust.evaluation.robustness`.
        """
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.con)
        for c in _JSON_COLUMNS:
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else None)
        return df

    def models(self) -> dict[str, dict[str, Any]]:
        """Every model recorded with :meth:`~medrobust.evaluation.store.ResultStore.set_model`.

        Returns:
            {model name: {"task", "classes", "intensity", "info"}}, JSON decoded.
        """
        out = {}
        for name, task, classes, intensity, info in self.con.execute("SELECT * FROM models"):
            out[name] = {"task": task, "classes": json.loads(classes), "intensity": json.loads(intensity or "null"),
                         "info": json.loads(info or "{}")}
        return out

    def checks_dataframe(self) -> pd.DataFrame:
        """The gradient-masking checks: columns model, attack, likely_masking (0/1), reasons."""
        return pd.read_sql_query("SELECT * FROM checks ORDER BY model, attack", self.con)

    def export_csv(self, path: str | Path) -> Path:
        """Write all runs as CSV atomically (JSON columns kept as JSON text).

        Args:
            path: the CSV file to write (replaced when it exists).

        Returns:
            ``path`` as a :class:`~pathlib.Path`.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> folder = Path(tempfile.mkdtemp())
            >>> with ResultStore(folder / "results.sqlite") as store:
            ...     store.export_csv(folder / "runs.csv").read_text().startswith("id,config_hash,model")
            True
        """
        from medrobust.data.io import atomic_path  # lazy: data is a sibling part

        path = Path(path)
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.con)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        return path


def load_ensemble_runs(path: str | Path) -> pd.DataFrame:
    """Every row of ``ensemble_runs`` in a store, read-only (empty frame when there is none).

    Args:
        path: the ``results.sqlite`` file (it may not exist).

    Returns:
        Columns :data:`ENSEMBLE_COLUMNS`, in insertion order.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.store import load_ensemble_runs
        >>> load_ensemble_runs(Path(tempfile.mkdtemp()) / "missing.sqlite").columns.tolist()[:4]
        ['model', 'perturbation', 'attack', 'norm']
    """
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(ENSEMBLE_COLUMNS))
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return pd.read_sql_query(f"SELECT {', '.join(ENSEMBLE_COLUMNS)} FROM ensemble_runs ORDER BY rowid", con)
    except (sqlite3.OperationalError, pd.errors.DatabaseError):  # a store older than the table
        return pd.DataFrame(columns=list(ENSEMBLE_COLUMNS))
    finally:
        con.close()
