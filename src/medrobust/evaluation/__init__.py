"""medrobust.evaluation: grid config, results store, runner and robustness summaries.

``run_grid`` is imported on first use (it pulls in torch and the attacks), so reading a
store (``ResultStore``) or a config stays light.
"""
from __future__ import annotations

from typing import Any

from medrobust.evaluation.config import GridConfig, GridConfigError, load_config, parse_config
from medrobust.evaluation.store import ResultStore, StoreError

__all__ = ["GridConfig", "GridConfigError", "ResultStore", "StoreError", "load_config", "parse_config", "run_grid"]


def __getattr__(name: str) -> Any:
    if name == "run_grid":
        from medrobust.evaluation.grid import run_grid
        return run_grid
    raise AttributeError(f"module 'medrobust.evaluation' has no attribute {name!r}")
