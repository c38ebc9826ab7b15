"""The store's format: its tables and their columns, the run key, and :class:`StoreError`.

``_SCHEMA`` creates the tables (``runs``, ``models``, ``checks``, ``meta``, ``ensemble_runs``);
:data:`RUN_COLUMNS` and :data:`ENSEMBLE_COLUMNS` are the columns a writer fills.
"""
from __future__ import annotations

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
