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

The package re-exports its public names (``from medrobust.evaluation.store import ResultStore``):

- :mod:`~medrobust.evaluation.store.schema`: the tables, their columns, the run key, :class:`StoreError`;
- :mod:`~medrobust.evaluation.store.result_store`: :class:`ResultStore` (open, stamp, write, merge);
- :mod:`~medrobust.evaluation.store.reading`: its reading methods and the read-only functions
  :func:`stored_config_hash` and :func:`load_ensemble_runs`;
- :mod:`~medrobust.evaluation.store.locking`: :class:`WriterLock` and the one-row transaction.
"""
from __future__ import annotations

from medrobust.evaluation.store.locking import WriterLock
from medrobust.evaluation.store.reading import load_ensemble_runs, stored_config_hash
from medrobust.evaluation.store.result_store import ResultStore
from medrobust.evaluation.store.schema import (
    ENSEMBLE_COLUMNS,
    ENSEMBLE_SCORINGS,
    KEY_COLUMNS,
    RUN_COLUMNS,
    RunKey,
    StoreError,
)

__all__ = ["ENSEMBLE_COLUMNS", "ENSEMBLE_SCORINGS", "KEY_COLUMNS", "RUN_COLUMNS", "ResultStore", "RunKey",
           "StoreError", "WriterLock", "load_ensemble_runs", "stored_config_hash"]
