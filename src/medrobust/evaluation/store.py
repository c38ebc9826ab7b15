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
- ``meta``: ``config_hash`` and ``config_json`` of the grid that wrote the store.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

KEY_COLUMNS: tuple[str, ...] = ("model", "perturbation", "eps_stated", "case_id")
RUN_COLUMNS: dict[str, str] = {
    "config_hash": "TEXT NOT NULL", "model": "TEXT NOT NULL", "perturbation": "TEXT NOT NULL",
    "kind": "TEXT NOT NULL", "attack": "TEXT NOT NULL", "norm": "TEXT", "options_json": "TEXT",
    "eps_stated": "REAL NOT NULL", "eps_unit": "TEXT NOT NULL", "eps_model": "REAL", "eps_raw": "REAL",
    "case_id": "TEXT NOT NULL", "task": "TEXT NOT NULL", "score_name": "TEXT NOT NULL",
    "clean_score": "REAL NOT NULL", "adv_score": "REAL NOT NULL",
    "clean_per_class": "TEXT", "adv_per_class": "TEXT", "clean_hd95": "TEXT", "adv_hd95": "TEXT",
    "label": "INTEGER", "clean_pred": "INTEGER", "adv_pred": "INTEGER", "clean_prob": "REAL", "adv_prob": "REAL",
    "clean_probs": "TEXT", "adv_probs": "TEXT",
    "linf_model": "REAL", "l2_model": "REAL", "linf_raw": "REAL", "l2_raw": "REAL", "ssim": "REAL", "psnr": "REAL",
    "loss_initial": "REAL", "loss_best": "REAL", "attack_seconds": "REAL", "seconds": "REAL", "created": "TEXT",
}
OUTCOME_FIELDS = ("score", "per_class", "hd95", "pred", "prob", "probs")


def outcome_columns(clean: dict[str, Any], adv: dict[str, Any]) -> dict[str, Any]:
    """The ``clean_*`` / ``adv_*`` run columns from two scored outcomes (dicts with the keys
    of :data:`OUTCOME_FIELDS`, as the grid scores a prediction), one source for every row kind."""
    return {f"{side}_{field}": outcome[field] for side, outcome in (("clean", clean), ("adv", adv))
            for field in OUTCOME_FIELDS}


_JSON_COLUMNS = ("clean_per_class", "adv_per_class", "clean_hd95", "adv_hd95", "clean_probs", "adv_probs")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT,
  {', '.join(f'{c} {t}' for c, t in RUN_COLUMNS.items())},
  UNIQUE ({', '.join(KEY_COLUMNS)}));
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, task TEXT NOT NULL, classes_json TEXT NOT NULL,
  intensity_json TEXT, info_json TEXT);
CREATE TABLE IF NOT EXISTS checks (model TEXT NOT NULL, attack TEXT NOT NULL, likely_masking INTEGER NOT NULL,
  reasons TEXT NOT NULL, PRIMARY KEY (model, attack));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

RunKey = tuple[str, str, float, str]


class StoreError(ValueError):
    """A results store cannot be used as asked (wrong config, bad row); names the file."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stored_config_hash(path: str | Path) -> str | None:
    """The config hash recorded in an existing store, or None when there is no store yet."""
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

    Args:
        path: the ``results.sqlite`` file.
        config_hash / config_json: when given, recorded on a new store and checked on an
            existing one (:class:`StoreError` if it was written by another grid).
    """

    def __init__(self, path: str | Path, config_hash: str | None = None, config_json: str | None = None) -> None:
        self.path = Path(path)
        previous = stored_config_hash(self.path)
        if config_hash is not None and previous is not None and previous != config_hash:
            raise StoreError(f"results store {self.path} was written by a different grid config "
                             f"(hash {previous}, this config {config_hash}); choose another `out` folder or delete it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per row.
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.executescript(_SCHEMA)
        self._add_missing_columns()
        if config_hash is not None and previous is None:
            with self._transaction():
                self.con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [("config_hash", config_hash), ("config_json", config_json or "{}"),
                                      ("created", _now())])

    # -- plumbing -------------------------------------------------------------------------
    def _add_missing_columns(self) -> None:
        """A store written by an older medrobust gains the newer (nullable) run columns."""
        present = {row[1] for row in self.con.execute("PRAGMA table_info(runs)")}
        for column, kind in RUN_COLUMNS.items():
            if column not in present and "NOT NULL" not in kind:
                self.con.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def _transaction(self) -> "_Tx":
        return _Tx(self.con)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------
    def add_run(self, row: dict[str, Any]) -> None:
        """Insert one run in its own transaction; a row whose key exists is left as it is.

        ``row`` maps column names (see ``RUN_COLUMNS``) to values; JSON columns may be given
        as dicts; ``created`` defaults to now (UTC).
        """
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

    def set_model(self, name: str, task: str, classes: list[str], intensity: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None) -> None:
        """Record a model's task, class names and IntensityMap (``IntensityMap.to_dict()``)."""
        with self._transaction():
            self.con.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
                             (name, task, json.dumps(list(classes)), json.dumps(intensity), json.dumps(info or {})))

    def write_checks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the gradient-masking checks (rows: model, attack, likely_masking, reasons)."""
        data = [(r["model"], r["attack"], int(bool(r["likely_masking"])),
                 r["reasons"] if isinstance(r["reasons"], str) else "; ".join(r["reasons"])) for r in rows]
        with self._transaction():
            self.con.execute("DELETE FROM checks")
            self.con.executemany("INSERT INTO checks VALUES (?, ?, ?, ?)", data)

    def merge(self, other: str | Path) -> int:
        """Copy every run (and model) of another store (e.g. a rank's shard) into this one.

        One transaction; rows whose key already exists are skipped. Returns rows added.
        """
        before = self.count()
        self.con.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            cols = ", ".join(RUN_COLUMNS)
            with self._transaction():
                self.con.execute(f"INSERT OR IGNORE INTO runs ({cols}) SELECT {cols} FROM shard.runs")
                self.con.execute("INSERT OR IGNORE INTO models SELECT * FROM shard.models")
        finally:
            self.con.execute("DETACH DATABASE shard")
        return self.count() - before

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def done_keys(self) -> set[RunKey]:
        """Keys ``(model, perturbation, eps_stated, case_id)`` of the finished runs."""
        return {(m, p, float(e), c) for m, p, e, c in self.con.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM runs")}

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def to_dataframe(self) -> pd.DataFrame:
        """All runs, ordered by insertion; JSON columns decoded into dicts (or None)."""
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.con)
        for c in _JSON_COLUMNS:
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else None)
        return df

    def models(self) -> dict[str, dict[str, Any]]:
        """{model name: {"task", "classes", "intensity", "info"}}."""
        out = {}
        for name, task, classes, intensity, info in self.con.execute("SELECT * FROM models"):
            out[name] = {"task": task, "classes": json.loads(classes), "intensity": json.loads(intensity or "null"),
                         "info": json.loads(info or "{}")}
        return out

    def checks_dataframe(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM checks ORDER BY model, attack", self.con)

    def export_csv(self, path: str | Path) -> Path:
        """Write all runs as CSV atomically (JSON columns kept as JSON text)."""
        from medrobust.data.io import atomic_path  # lazy: data is a sibling part

        path = Path(path)
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.con)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        return path


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (one row = one transaction)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
