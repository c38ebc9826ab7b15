"""medrobust.evaluation: the evaluation core, the grid, the results store and robustness summaries.

- :mod:`~medrobust.evaluation.cases`: a dataset item -> its prepared :class:`Case`
  (``prepare_case``: tensors, windowed model, clean outcome).
- :mod:`~medrobust.evaluation.core`: one (model, perturbation, level, case) -> one
  :class:`Row` (``perturb``, ``evaluate_run``); every runner calls it.
- :mod:`~medrobust.evaluation.grid`: ``run_grid(config)``, models x perturbations x levels x
  cases into ``results.sqlite``, resumable and sharded under ``torchrun``.
- :mod:`~medrobust.evaluation.store`: :class:`ResultStore`, the SQLite file.
- :mod:`~medrobust.evaluation.robustness`: curves, worst case over attacks, AUC.

The functions that run models (``run_grid``, ``evaluate_run``, ``prepare_case``,
``load_model``) are imported on first use (they pull in torch and the attacks), so reading
a store or a config stays light.

Example:
    >>> from medrobust.evaluation import RunSettings
    >>> RunSettings(seed=0, config_hash="abc").wants("ssim")
    True
"""
from __future__ import annotations

import importlib
from typing import Any

from medrobust.evaluation.config import GridConfig, GridConfigError, load_config, parse_config
from medrobust.evaluation.store import ResultStore, StoreError
from medrobust.evaluation.types import Case, LoadedModel, Outcome, Row, RunSettings

_LAZY = {"run_grid": "medrobust.evaluation.grid", "evaluate_run": "medrobust.evaluation.core",
         "prepare_case": "medrobust.evaluation.cases", "load_model": "medrobust.evaluation.loading"}

__all__ = ["Case", "GridConfig", "GridConfigError", "LoadedModel", "Outcome", "ResultStore", "Row", "RunSettings",
           "StoreError", "evaluate_run", "load_config", "load_model", "parse_config", "prepare_case", "run_grid"]


def __getattr__(name: str) -> Any:
    """The functions that run models, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medrobust.evaluation' has no attribute {name!r}")
