"""Hyper-parameter search over a recipe with Optuna (seed 002), stored in SQLite so it resumes.

Each trial trains one model with the shared loop (``fit``), scores it on the **validation**
split only (never test), and reports the objective:

- ``clean``:  the validation score (mean foreground Dice, or balanced accuracy);
- ``robust``: the same score on validation cases attacked by ``eval_attack`` at the fixed
  ``eval_eps`` (so trials that tune their *training* eps are compared at one budget);
- ``mean``:   (clean + robust) / 2
(:func:`medrobust.training.validation.selection_metrics`, which the loop's ``--select`` uses too).

Optuna only samples; the search space (which parameters a recipe has, their ranges and
scales) is ours, because it follows from the recipe's signature.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrobust.training.recipes import RECIPES


@dataclass(frozen=True)
class Range:
    """One searched parameter: ``low``..``high``, sampled on a log scale or as an integer."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> float | int:
        """Draw a value from an ``optuna.Trial``."""
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


# Loop parameters (every recipe) and recipe parameters (where the recipe's signature has them).
# eps is in the recipe's eps_unit (default 1/255 of the valid range).
DEFAULT_RANGES: dict[str, Range] = {
    "lr": Range(1e-4, 1e-2, log=True),
    "weight_decay": Range(1e-6, 1e-3, log=True),
    "adv_weight": Range(0.2, 0.8),
    "eps": Range(1.0, 8.0),
    "steps": Range(1, 10, integer=True),
    "beta": Range(1.0, 10.0, log=True),
    "alpha": Range(0.3, 1.0),
}
LOOP_PARAMETERS = ("lr", "weight_decay")


def search_space(recipe: str, names: Sequence[str] | None = None,
                 overrides: dict[str, Sequence[float]] | None = None) -> dict[str, Range]:
    """The parameters searched for ``recipe``.

    Args:
        recipe: a name in ``RECIPES``.
        names: parameters to search (default: every one of :data:`DEFAULT_RANGES` that the
            loop or the recipe accepts).
        overrides: ``{name: [low, high]}`` replacing default ranges (scale kept).

    Raises:
        ValueError: unknown recipe, a parameter the recipe does not take, or a bad range.
    """
    if recipe not in RECIPES:
        raise ValueError(f"--recipe: unknown recipe {recipe!r}; allowed: {', '.join(sorted(RECIPES))}")
    accepted = set(LOOP_PARAMETERS) | set(inspect.signature(RECIPES[recipe]).parameters)
    available = [n for n in DEFAULT_RANGES if n in accepted]
    chosen = list(names) if names else available
    for name in chosen:
        if name not in available:
            raise ValueError(f"--space: recipe {recipe!r} has no parameter {name!r} to search; "
                             f"allowed: {', '.join(available)}")
    space = {name: DEFAULT_RANGES[name] for name in chosen}
    for name, bounds in (overrides or {}).items():
        if name not in space:
            raise ValueError(f"--ranges: {name!r} is not searched; searched: {', '.join(space)}")
        if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
                and bounds[0] < bounds[1]):
            raise ValueError(f"--ranges: {name!r} needs [low, high] with low < high, got {bounds!r}")
        default = space[name]
        if default.log and bounds[0] <= 0:
            raise ValueError(f"--ranges: {name!r} is searched on a log scale; low must be > 0, got {bounds[0]}")
        space[name] = Range(float(bounds[0]), float(bounds[1]), log=default.log, integer=default.integer)
    return space


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loop parameters for TrainConfig, recipe parameters) of one trial's ``params``."""
    loop = {k: v for k, v in params.items() if k in LOOP_PARAMETERS}
    return loop, {k: v for k, v in params.items() if k not in LOOP_PARAMETERS}


def study_path(out: Path) -> Path:
    """Where the SQLite study of a tune run lives."""
    return out / "study.sqlite"


def open_study(out: Path, name: str, seed: int) -> Any:
    """Create or reopen the study in ``out/study.sqlite``.

    Trials left RUNNING by an interrupted process are marked FAIL and their parameters are
    queued again with ``resumes`` = their number, so the retry reuses the trial's run folder
    and the loop resumes from its ``last/`` state.

    The TPE sampler is seeded with (``seed``, number of finished trials): a sampler seeded
    with ``seed`` alone would, on every reopen, replay the random start-up draws of the
    trials already run, so a resumed study would repeat them instead of exploring.

    Args:
        out: the study folder (created).
        name: the study's name in the storage.
        seed: the search's seed (``--seed``).

    Returns:
        The ``optuna.Study``, its sampler seeded for the trials still to come.
    """
    import numpy as np
    import optuna  # optional dependency: `pip install medrobust[tune]`
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI prints its own progress and table
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{study_path(out)}", direction="maximize",
                                load_if_exists=True)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params, user_attrs={"resumes": stale.user_attrs.get("resumes", stale.number)})
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
    sampler_seed = int(np.random.SeedSequence([seed, finished]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    return study


def trial_folder(out: Path, trial: Any) -> Path:
    """Run folder of a trial: its own number, or the number of the interrupted trial it retries."""
    return out / "trials" / f"trial_{trial.user_attrs.get('resumes', trial.number):04d}"


def completed_trials(study: Any) -> list[Any]:
    """The finished trials of an Optuna study (not pruned, failed or running)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
