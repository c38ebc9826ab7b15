"""The writer of a store: :class:`ResultStore`, the SQLite file opened for a grid or a report.

It opens (and migrates) the file, stamps it with the grid's config hash under the writer's
lock, and adds runs, ensemble rows, models and checks, one transaction each; its reading
methods come from :class:`~medrobust.evaluation.store.reading.StoreReader`.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.evaluation.store.locking import WriterLock, _Tx
from medrobust.evaluation.store.reading import StoreReader
from medrobust.evaluation.store.schema import _JSON_COLUMNS, _SCHEMA, ENSEMBLE_COLUMNS, RUN_COLUMNS, StoreError
from medrobust.evaluation.types import Row


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultStore(StoreReader):
    """Open (creating if needed) a results store at ``path``.

    Its parent folder is created; a store written by an older medrobust gains the newer
    columns and tables. Use it as a context manager (or call :meth:`close`). Writes are
    idempotent: a run whose key ``(model, perturbation, eps_stated, case_id)`` is already
    stored is left as it is, which is how a grid resumes (:meth:`done_keys`).

    Args:
        path: the ``results.sqlite`` file.
        config_hash: when given, recorded on a new store and checked on an existing one.
        config_json: the grid config as JSON, recorded beside ``config_hash`` on a new store.

    With ``config_hash`` (a grid's writer) the store is locked for this writer while it is
    open, and the hash is checked and recorded in one transaction, so a second writer (of
    this or another grid) stops with a StoreError instead of computing the same rows. When
    the ``with`` block fails before any row was written, the stamp is removed again, so
    a corrected grid may use the folder.

    Raises:
        StoreError: ``config_hash`` differs from the one the existing store records (it was
            written by another grid), another writer holds the store, the path is a folder,
            or the file is not a medrobust store.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.store import ResultStore
        >>> from medrobust.evaluation.types import Row
        >>> path = Path(tempfile.mkdtemp()) / "results.sqlite"
        >>> row = Row(config_hash="0123456789abcdef", model="m", perturbation="pgd", kind="attack", attack="pgd",
        ...           eps_stated=4.0, eps_unit="1/255", case_id="c1", task="classification",
        ...           score_name="accuracy", clean_score=1.0, adv_score=0.0, norm="linf")
        >>> with ResultStore(path, config_hash="0123456789abcdef") as store:
        ...     store.add_run(row)
        ...     store.add_run(row)  # same key: skipped
        ...     print(store.count(), store.done_keys())
        1 {('m', 'pgd', 4.0, 'c1')}
        >>> with ResultStore(path) as store:  # reopened, e.g. by the report
        ...     store.to_dataframe()[["model", "perturbation", "eps_stated", "adv_score"]].values.tolist()
        [['m', 'pgd', 4.0, 0.0]]
    """

    def __init__(self, path: str | Path, config_hash: str | None = None, config_json: str | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"results store {self.path} exists and is not a file")
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise StoreError(f"results store {self.path}: {self.path.parent} exists and is not a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A grid's writer holds the store's lock while it is open: a second writer stops at once.
        self._lock = WriterLock(self.path.with_name(self.path.name + ".lock")) if config_hash is not None else None
        try:
            self._connect()
            if config_hash is not None:
                with self._transaction():  # check and stamp in one transaction: two grids never both pass
                    self._stamp(config_hash, config_json)
        except BaseException:
            self._release()
            raise

    def _connect(self) -> None:
        """Open the SQLite file (WAL) with the current schema."""
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per row.
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
        try:
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as exc:
            self.con.close()
            raise StoreError(f"results store {self.path} is not a medrobust store ({exc})") from None

    def _stamp(self, config_hash: str, config_json: str | None) -> None:
        """Record ``config_hash`` on a store without one; refuse a store stamped by another grid."""
        row = self.con.execute("SELECT value FROM meta WHERE key = 'config_hash'").fetchone()
        if row is None:
            self.con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [("config_hash", config_hash), ("config_json", config_json or "{}"),
                                  ("created", _now())])
        elif row[0] != config_hash:
            raise StoreError(f"results store {self.path} was written by a different grid config "
                             f"(hash {row[0]}, this config {config_hash}); choose another `out` folder or delete it")

    # -- plumbing -------------------------------------------------------------------------
    def _add_missing_columns(self) -> None:
        """A store written by an older medrobust gains the newer (nullable) run columns."""
        present = {row[1] for row in self.con.execute("PRAGMA table_info(runs)")}
        for column, kind in RUN_COLUMNS.items():
            if column not in present and "NOT NULL" not in kind:
                self.con.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def _transaction(self) -> _Tx:
        return _Tx(self.con)

    def close(self) -> None:
        """Close the SQLite connection and release the writer's lock (the store is unusable afterwards)."""
        self.con.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is not None:
                self._unstamp_if_empty()
        except sqlite3.Error:  # the store itself failed: the original error is the one to report
            pass
        finally:
            self.close()

    def _unstamp_if_empty(self) -> None:
        """After a failure before any result row: forget the grid's stamp and models.

        A corrected grid may then use the folder (nothing of the failed one is kept).
        """
        with self._transaction():
            empty = self.con.execute("SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM ensemble_runs)")
            if empty.fetchone()[0] == 0:
                self.con.execute("DELETE FROM meta")
                self.con.execute("DELETE FROM models")

    # -- writing --------------------------------------------------------------------------
    def add_run(self, row: Row | Mapping[str, Any]) -> None:
        """Insert one run in its own transaction; a row whose key exists is left as it is.

        Args:
            row: a :class:`~medrobust.evaluation.types.Row`, or a mapping of column names
                (see ``RUN_COLUMNS``) to values; JSON columns may be given as dicts;
                ``created`` defaults to now (UTC).

        Raises:
            StoreError: an unknown column or a missing required one (named).

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> run = {"config_hash": "h", "model": "m", "perturbation": "noise", "kind": "corruption",
            ...        "attack": "noise", "eps_stated": 2.0, "eps_unit": "severity", "case_id": "c1",
            ...        "task": "segmentation", "score_name": "dice", "clean_score": 0.9, "adv_score": 0.7,
            ...        "adv_per_class": {"liver": 0.7}}
            >>> with ResultStore(Path(tempfile.mkdtemp()) / "results.sqlite") as store:
            ...     store.add_run(run)
            ...     store.to_dataframe()["adv_per_class"].tolist()
            [{'liver': 0.7}]
        """
        row = row.as_dict() if isinstance(row, Row) else dict(row)
        unknown = sorted(set(row) - set(RUN_COLUMNS))
        if unknown:
            raise StoreError(f"{self.path}: unknown run column(s) {', '.join(unknown)}; allowed: {', '.join(RUN_COLUMNS)}")
        values = {c: row.get(c) for c in RUN_COLUMNS}
        values["created"] = values["created"] or _now()
        for c in _JSON_COLUMNS:
            if values[c] is not None and not isinstance(values[c], str):
                values[c] = json.dumps(values[c])
        missing = [c for c, t in RUN_COLUMNS.items() if "NOT NULL" in t and values[c] is None]
        if missing:
            raise StoreError(f"{self.path}: run row lacks required column(s) {', '.join(missing)}")
        cols = ", ".join(values)
        with self._transaction():
            self.con.execute(f"INSERT OR IGNORE INTO runs ({cols}) VALUES ({', '.join('?' * len(values))})",
                             list(values.values()))

    def add_ensemble_rows(self, rows: pd.DataFrame, keys: Mapping[str, Any]) -> None:
        """Add the ensemble rows of one (perturbation, eps, case) in one transaction.

        Args:
            rows: per-setting rows as :func:`medrobust.evaluation.ensembles.evaluate_ensemble`
                returns them (setting, case_id, label, the three scorings, members_json).
            keys: model, perturbation, attack, norm, eps_stated, eps_unit shared by the rows.

        Rows whose key ``(model, perturbation, eps_stated, setting, case_id)`` exists are left
        as they are, so a resumed grid never sees half a case.

        Example:
            >>> import tempfile
            >>> import pandas as pd
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> rows = pd.DataFrame([{"setting": "clean", "case_id": "c1", "label": 1, "hard_vote": 1,
            ...                       "soft_vote": 1, "mean_logits": 1, "members_json": "[1, 1]"}])
            >>> keys = {"model": "ens", "perturbation": "pgd", "attack": "pgd", "norm": "linf",
            ...         "eps_stated": 4.0, "eps_unit": "1/255"}
            >>> with ResultStore(Path(tempfile.mkdtemp()) / "results.sqlite") as store:
            ...     store.add_ensemble_rows(rows, keys)
            ...     store.ensemble_done_keys("ens")
            {('pgd', 4.0, 'c1')}
        """
        records = [tuple(r.get(c, keys.get(c)) for c in ENSEMBLE_COLUMNS) for r in rows.to_dict("records")]
        with self._transaction():
            self.con.executemany(f"INSERT OR IGNORE INTO ensemble_runs ({', '.join(ENSEMBLE_COLUMNS)}) "
                                 f"VALUES ({', '.join('?' * len(ENSEMBLE_COLUMNS))})", records)

    def set_model(self, name: str, task: str, classes: list[str], intensity: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None) -> None:
        """Record a model's task, class names and IntensityMap (``IntensityMap.to_dict()``).

        A model recorded before is replaced.

        Args:
            name: the model's name in the grid (the ``model`` column of its runs).
            task: ``"segmentation"`` or ``"classification"``.
            classes: class names, by label index.
            intensity: ``IntensityMap.to_dict()`` of the model, or None when unknown.
            info: further JSON-serialisable facts about the model (architecture, ...).

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> with ResultStore(Path(tempfile.mkdtemp()) / "results.sqlite") as store:
            ...     store.set_model("unet", "segmentation", ["background", "liver"])
            ...     store.models()["unet"]
            {'task': 'segmentation', 'classes': ['background', 'liver'], 'intensity': None, 'info': {}}
        """
        with self._transaction():
            self.con.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
                             (name, task, json.dumps(list(classes)), json.dumps(intensity), json.dumps(info or {})))

    def write_checks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the gradient-masking checks (rows: model, attack, likely_masking, reasons).

        Args:
            rows: dicts as :func:`medrobust.evaluation.robustness.masking_checks` returns
                them; ``reasons`` is a string or a list of strings (joined with "; ").

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> with ResultStore(Path(tempfile.mkdtemp()) / "results.sqlite") as store:
            ...     store.write_checks([{"model": "m", "attack": "pgd", "likely_masking": True,
            ...                          "reasons": ["flat loss", "score rises with eps"]}])
            ...     store.checks_dataframe()["reasons"].tolist()
            ['flat loss; score rises with eps']
        """
        data = [(r["model"], r["attack"], int(bool(r["likely_masking"])),
                 r["reasons"] if isinstance(r["reasons"], str) else "; ".join(r["reasons"])) for r in rows]
        with self._transaction():
            self.con.execute("DELETE FROM checks")
            self.con.executemany("INSERT INTO checks VALUES (?, ?, ?, ?)", data)

    def merge(self, other: str | Path) -> int:
        """Copy every run (and model) of another store (e.g. a rank's shard) into this one.

        One transaction; rows whose key already exists are skipped. Ensemble rows are
        copied too.

        Args:
            other: the other store's ``results.sqlite``.

        Returns:
            The number of ``runs`` rows added.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from medrobust.evaluation.store import ResultStore
            >>> folder = Path(tempfile.mkdtemp())
            >>> run = {"config_hash": "h", "model": "m", "perturbation": "pgd", "kind": "attack", "attack": "pgd",
            ...        "eps_stated": 4.0, "eps_unit": "1/255", "case_id": "c1", "task": "classification",
            ...        "score_name": "accuracy", "clean_score": 1.0, "adv_score": 0.0}
            >>> with ResultStore(folder / "rank1.sqlite") as shard:
            ...     shard.add_run(run)
            ...     shard.add_run({**run, "case_id": "c2"})
            >>> with ResultStore(folder / "results.sqlite") as store:
            ...     store.add_run(run)
            ...     store.merge(folder / "rank1.sqlite"), store.count()
            (1, 2)
        """
        before = self.count()
        self.con.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            cols = ", ".join(RUN_COLUMNS)
            with self._transaction():
                self.con.execute(f"INSERT OR IGNORE INTO runs ({cols}) SELECT {cols} FROM shard.runs")
                self.con.execute("INSERT OR IGNORE INTO models SELECT * FROM shard.models")
                ens = ", ".join(ENSEMBLE_COLUMNS)
                self.con.execute(f"INSERT OR IGNORE INTO ensemble_runs ({ens}) SELECT {ens} FROM shard.ensemble_runs")
        finally:
            self.con.execute("DETACH DATABASE shard")
        return self.count() - before
