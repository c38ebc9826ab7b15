"""The results store: one SQLite file, one row per (model, perturbation, budget, case).

stdlib ``sqlite3`` in WAL mode; every row is written in its own transaction, so a process
killed at any point leaves only whole rows and a rerun skips them (``done_keys``).

Tables
------
- ``runs``: one row per run. Key columns ``model, perturbation, eps_stated, case_id``
  (UNIQUE). ``clean_score`` / ``adv_score`` are the main metric (mean foreground Dice in
  [0, 1] for segmentation, 1/0 correct for classification; ``score_name`` says which);
  ``clean_per_class`` / ``adv_per_class`` are JSON objects {class name: Dice};
  ``eps_model`` / ``eps_raw`` the radius in model and raw units; ``linf_*`` / ``l2_*`` the
  achieved perturbation norms; ``attack_seconds`` the attack's own time, ``seconds`` the
  whole row.
- ``models``: task, class names, IntensityMap (JSON) of each model.
- ``checks``: gradient-masking checks per (model, attack): ``likely_masking`` 0/1, reasons.
- ``ensemble_runs``: an ensemble classifier's per-case predictions under each setting
  (clean, transfer from one member, joint attack), scored three ways (hard vote, soft vote,
  mean logits); key ``model, perturbation, eps_stated, setting, case_id``.
- ``meta``: ``config_hash`` and ``config_json`` of the grid that wrote the store.

A store written by an older medrobust gains the newer nullable columns and tables when it
is opened (the one migration path). A grid's writer holds ``results.sqlite.lock`` (``flock``)
while the store is open, so one folder has one writer at a time.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.evaluation.types import Row

KEY_COLUMNS: tuple[str, ...] = ("model", "perturbation", "eps_stated", "case_id")
RUN_COLUMNS: dict[str, str] = {
    "config_hash": "TEXT NOT NULL", "model": "TEXT NOT NULL", "perturbation": "TEXT NOT NULL",
    "kind": "TEXT NOT NULL", "attack": "TEXT NOT NULL", "norm": "TEXT", "options_json": "TEXT",
    "eps_stated": "REAL NOT NULL", "eps_unit": "TEXT NOT NULL", "eps_model": "REAL", "eps_raw": "REAL",
    "case_id": "TEXT NOT NULL", "task": "TEXT NOT NULL", "score_name": "TEXT NOT NULL",
    "clean_score": "REAL NOT NULL", "adv_score": "REAL NOT NULL",
    "clean_per_class": "TEXT", "adv_per_class": "TEXT", "clean_hd95": "TEXT", "adv_hd95": "TEXT",
    "clean_nsd": "TEXT", "adv_nsd": "TEXT",
    "label": "INTEGER", "clean_pred": "INTEGER", "adv_pred": "INTEGER", "clean_prob": "REAL", "adv_prob": "REAL",
    "clean_probs": "TEXT", "adv_probs": "TEXT",
    "linf_model": "REAL", "l2_model": "REAL", "linf_raw": "REAL", "l2_raw": "REAL", "ssim": "REAL", "psnr": "REAL",
    "loss_initial": "REAL", "loss_best": "REAL", "attack_seconds": "REAL", "seconds": "REAL", "created": "TEXT",
    "iterate_rule": "TEXT", "method": "TEXT", "target": "TEXT", "target_success": "REAL",
    "region": "TEXT", "region_fraction": "REAL",
}
_JSON_COLUMNS = ("clean_per_class", "adv_per_class", "clean_hd95", "adv_hd95", "clean_nsd", "adv_nsd", "clean_probs",
                 "adv_probs")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT,
  {', '.join(f'{c} {t}' for c, t in RUN_COLUMNS.items())},
  UNIQUE ({', '.join(KEY_COLUMNS)}));
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, task TEXT NOT NULL, classes_json TEXT NOT NULL,
  intensity_json TEXT, info_json TEXT);
CREATE TABLE IF NOT EXISTS checks (model TEXT NOT NULL, attack TEXT NOT NULL, likely_masking INTEGER NOT NULL,
  reasons TEXT NOT NULL, PRIMARY KEY (model, attack));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ensemble_runs (model TEXT NOT NULL, perturbation TEXT NOT NULL, attack TEXT,
  norm TEXT, eps_stated REAL NOT NULL, eps_unit TEXT, setting TEXT NOT NULL, case_id TEXT NOT NULL, label INTEGER,
  hard_vote INTEGER, soft_vote INTEGER, mean_logits INTEGER, members_json TEXT,
  PRIMARY KEY (model, perturbation, eps_stated, setting, case_id));
"""
ENSEMBLE_SCORINGS: tuple[str, ...] = ("hard_vote", "soft_vote", "mean_logits")
ENSEMBLE_COLUMNS: tuple[str, ...] = ("model", "perturbation", "attack", "norm", "eps_stated", "eps_unit", "setting",
                                     "case_id", "label", *ENSEMBLE_SCORINGS, "members_json")

RunKey = tuple[str, str, float, str]


class StoreError(ValueError):
    """A results store cannot be used as asked (wrong config, bad row); names the file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.store import ResultStore, StoreError
        >>> with ResultStore(Path(tempfile.mkdtemp()) / "results.sqlite") as store:
        ...     try:
        ...         store.add_run({"model": "m", "colour": "red"})
        ...     except StoreError as exc:
        ...         print("unknown run column(s) colour" in str(exc))
        True
    """


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


class ResultStore:
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

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        """The number of rows in ``runs``."""
        return int(self.con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def done_keys(self) -> set[RunKey]:
        """Keys ``(model, perturbation, eps_stated, case_id)`` of the finished runs.

        Returns:
            A set of :data:`RunKey` tuples, ``eps_stated`` as float, for skipping finished
            runs on resume (see the class example).
        """
        return {(m, p, float(e), c) for m, p, e, c in self.con.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM runs")}

    def ensemble_done_keys(self, model: str) -> set[tuple[str, float, str]]:
        """``(perturbation, eps_stated, case_id)`` of the finished ensemble runs of ``model``.

        Args:
            model: the ensemble's name.

        Returns:
            A set of ``(perturbation, eps_stated, case_id)`` tuples (see
            :meth:`add_ensemble_rows`).
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
        """Every model recorded with :meth:`set_model`.

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
