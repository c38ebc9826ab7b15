"""Search space and study resumption of the Optuna tuning (training/tuning.py)."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from medrobust.training.tuning import DEFAULT_RANGES, open_study, search_space, split_params, trial_folder


def test_search_space_follows_the_recipe_signature() -> None:
    assert set(search_space("pgd_at")) == {"lr", "weight_decay", "adv_weight", "eps", "steps"}
    assert set(search_space("trades")) == {"lr", "weight_decay", "eps", "steps", "beta"}
    assert set(search_space("standard")) == {"lr", "weight_decay"}
    assert set(search_space("assimilation")) == {"lr", "weight_decay", "alpha"}


@pytest.mark.parametrize("recipe, names, ranges, expect", [
    ("nope", None, None, "--recipe"),
    ("standard", ["adv_weight"], None, "has no parameter 'adv_weight'"),
    ("pgd_at", ["lr"], {"steps": [1, 2]}, "'steps' is not searched"),
    ("pgd_at", ["lr"], {"lr": [0.1, 0.01]}, "low < high"),
    ("pgd_at", ["lr"], {"lr": [0.0, 0.01]}, "log scale"),
])
def test_bad_search_space_names_the_argument(recipe: str, names: list[str] | None, ranges: dict | None,
                                             expect: str) -> None:
    with pytest.raises(ValueError, match=expect):
        search_space(recipe, names, ranges)


def test_override_keeps_scale_and_split_separates_loop_parameters() -> None:
    space = search_space("pgd_at", ["lr", "steps"], {"lr": [1e-3, 2e-3], "steps": [2, 4]})
    assert space["lr"].log and space["lr"].low == 1e-3 and space["steps"].integer
    assert DEFAULT_RANGES["lr"].low == 1e-4  # the defaults are untouched
    loop, recipe = split_params({"lr": 0.01, "weight_decay": 0.0, "eps": 4.0, "steps": 3})
    assert loop == {"lr": 0.01, "weight_decay": 0.0} and recipe == {"eps": 4.0, "steps": 3}


def test_suggested_values_stay_in_range() -> None:
    space = search_space("pgd_at", None, {"steps": [2, 4]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {n: r.suggest(trial, n) for n, r in space.items()}
        study.tell(trial, 0.0)
        assert 2 <= values["steps"] <= 4 and isinstance(values["steps"], int)
        assert all(space[n].low <= v <= space[n].high for n, v in values.items())


def test_interrupted_trial_is_retried_in_its_own_folder(tmp_path: Path) -> None:
    study = open_study(tmp_path, "s", seed=0)
    done = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    study.tell(done, 0.5)
    study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})  # left RUNNING: a crash
    reopened = open_study(tmp_path, "s", seed=0)
    states = [t.state for t in reopened.get_trials()]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    retry = reopened.ask()
    assert retry.suggest_float("lr", 1e-4, 1e-2, log=True) == reopened.get_trials()[1].params["lr"]
    assert trial_folder(tmp_path, retry) == tmp_path / "trials" / "trial_0001"


def _search(study: optuna.Study, n: int) -> list[dict]:
    space = search_space("pgd_at", ["lr", "steps"])
    study.optimize(lambda trial: sum(float(r.suggest(trial, k)) for k, r in space.items()), n_trials=n)
    return [t.params for t in study.get_trials()]


def test_resumed_study_proposes_new_parameters_and_stays_reproducible(tmp_path: Path) -> None:
    first = _search(open_study(tmp_path / "a", "s", seed=0), 3)
    resumed = _search(open_study(tmp_path / "a", "s", seed=0), 3)  # a rerun after 3 finished trials
    assert resumed[:3] == first
    assert all(new not in first for new in resumed[3:])  # the reopened sampler does not replay trials 0-2
    _search(open_study(tmp_path / "b", "s", seed=0), 3)
    again = _search(open_study(tmp_path / "b", "s", seed=0), 3)
    assert again == resumed  # same seed, same interruptions: the same trials
