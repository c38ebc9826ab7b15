"""``medrobust tune``: Optuna search over a recipe's hyper-parameters, resumable from SQLite.

Writes into ``--out``: ``study.sqlite`` (the Optuna study; rerun the same command to add the
missing trials or to retry an interrupted one), ``trials/trial_NNNN/`` (each trial's run
folder), ``trials.csv`` (every trial's parameters and scores) and ``best_params.json``, which
``medrobust train --params OUT/best_params.json`` accepts as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medrobust.cli import app
from medrobust.cli.options import check_out_folder, parse_json_object, parse_size
from medrobust.data.io import atomic_path, write_json_atomic
from medrobust.data.sources import open_split
from medrobust.training import TrainConfig, build_recipe
from medrobust.training.api import train_model
from medrobust.training.tuning import completed_trials, open_study, search_space, split_params, trial_folder
from medrobust.training.validation import CRITERIA, RobustEvaluation

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def _trial_table(trials: list[Any], best: int) -> Table:
    names = sorted({k for t in trials for k in t.params})
    table = Table(title="completed trials (validation split)")
    for column in ["trial", *names, "clean", "robust", "objective"]:
        table.add_column(column, justify="right")
    for t in sorted(trials, key=lambda t: t.number):
        row = [f"{t.number}{' *' if t.number == best else ''}"]
        row += [f"{t.params[n]:.3g}" if n in t.params else "" for n in names]
        robust = t.user_attrs.get("robust")
        row += [f"{t.user_attrs.get('clean', float('nan')):.4f}", "" if robust is None else f"{robust:.4f}",
                f"{t.value:.4f}"]
        table.add_row(*row)
    return table


def _write_results(study: Any, out: Path, fixed: dict[str, Any]) -> Path | None:
    """trials.csv and best_params.json (atomically); None while no trial has completed."""
    with atomic_path(out / "trials.csv") as tmp:
        study.trials_dataframe().to_csv(tmp, index=False)
    if not completed_trials(study):
        return None
    return write_json_atomic(out / "best_params.json", {**fixed, **study.best_trial.params})


@app.command()
def tune(
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV (train + val "
                              "splits; the test split is never used)."),
    out: Path = typer.Option(..., "--out", help="Study folder: study.sqlite, trials/, trials.csv, best_params.json."),
    recipe: str = typer.Option("pgd_at", "--recipe", help="The recipe whose parameters are searched."),
    model: str = typer.Option("unet", "--model", help="Registry network (as in `medrobust train`)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Completed trials wanted in the study in all; a rerun "
                               "adds only the missing ones."),
    objective: str = typer.Option("mean", "--objective", help="clean (validation score), robust (score under the "
                                  "--eval-* attack) or mean (their average)."),
    space: str | None = typer.Option(None, "--space", help="Comma-separated parameters to search (default: every "
                                        "one the recipe takes of lr, weight_decay, adv_weight, eps, steps, beta, "
                                        "alpha)."),
    ranges: str | None = typer.Option(None, "--ranges", help='JSON {name: \\[low, high]} replacing default ranges, '
                                         'e.g. \'{"lr": [1e-4, 3e-3], "steps": [1, 5]}\'. Defaults: lr 1e-4..1e-2 '
                                         "(log), weight_decay 1e-6..1e-3 (log), adv_weight 0.2..0.8, eps 1..8 (the "
                                         "recipe's eps_unit), steps 1..10, beta 1..10 (log), alpha 0.3..1."),
    params: str | None = typer.Option(None, "--params", help="Fixed recipe parameters as JSON or a .json file "
                                         "(not searched; copied into best_params.json)."),
    eval_attack: str = typer.Option("pgd", "--eval-attack", help="Attack of the robust objective."),
    eval_eps: float = typer.Option(4.0, "--eval-eps", help="L-inf eps of the robust objective, fixed for all trials."),
    eval_eps_unit: str = typer.Option("1/255", "--eval-eps-unit", help="1/255, HU, raw or model."),
    eval_steps: int = typer.Option(10, "--eval-steps", min=1, help="Attack steps of the robust objective."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Training epochs per trial."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Cases per batch."),
    roi_size: str | None = typer.Option(None, "--roi-size", help="Model input size; larger volumes go through a "
                                           "sliding window."),
    patch_size: str | None = typer.Option(None, "--patch-size", help="Crop/pad (segmentation) or resize "
                                             "(classification) to this size."),
    normalization: str | None = typer.Option(None, "--normalization", help="zscore, minmax, none or ct:LOW,HIGH."),
    model_kwargs: str | None = typer.Option(None, "--model-kwargs", help="Extra network kwargs as JSON."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of every trial's training."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Search a recipe's hyper-parameters on the validation split; resumable."""
    check_out_folder(out, "--out")
    if objective not in CRITERIA:
        raise ValueError(f"--objective: unknown {objective!r}; allowed: {', '.join(CRITERIA)}")
    searched = search_space(recipe, [s.strip() for s in space.split(",") if s.strip()] if space else None,
                            parse_json_object(ranges, "--ranges"))
    fixed = parse_json_object(params, "--params")
    clash = sorted(set(fixed) & set(searched))
    if clash:
        raise ValueError(f"--params: {', '.join(clash)} also searched; drop them from --params or --space")
    fixed_loop, fixed_recipe = split_params(fixed)
    build_recipe(recipe, **fixed_recipe)  # bad fixed parameters fail before any training
    open_split(data, "val", normalization=normalization)  # so does a bad dataset: nothing is written then
    evaluation = RobustEvaluation(attack=eval_attack, eps=eval_eps, eps_unit=eval_eps_unit, steps=eval_steps)
    kwargs = parse_json_object(model_kwargs, "--model-kwargs")
    roi, patch = parse_size(roi_size, "--roi-size"), parse_size(patch_size, "--patch-size")
    # each trial keeps its best epoch by the objective itself, so the value is that epoch's score
    base = TrainConfig(epochs=epochs, batch_size=batch_size, roi_size=roi, seed=seed, device=device,
                       select=objective, select_attack=evaluation, **fixed_loop)

    def run_trial(trial: Any) -> float:
        loop_params, recipe_params = split_params({**fixed, **{n: r.suggest(trial, n) for n, r in searched.items()}})
        run = trial_folder(out, trial)
        trial.set_user_attr("run", str(run))
        result = train_model(data, model, run, recipe=recipe, recipe_params=recipe_params, model_kwargs=kwargs,
                             config=base.model_copy(update=loop_params), normalization=normalization,
                             patch_size=patch, progress=False)
        best_row = next(row for row in result.history if row["epoch"] == result.best_epoch)
        for key in ("clean", "robust"):
            if f"val_{key}_score" in best_row:
                trial.set_user_attr(key, best_row[f"val_{key}_score"])
        return result.best_metric

    study = open_study(out, f"{recipe}-{model}", seed)
    remaining = max(0, trials - len(completed_trials(study)))
    console.print(f"study {out / 'study.sqlite'}: {len(completed_trials(study))} trials done, {remaining} to run; "
                  f"searching {', '.join(searched)}; objective {objective}")
    columns = (TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[best]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("tune", total=remaining, best="")

        def advance(study: Any, _: Any) -> None:
            done = completed_trials(study)
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})" if done else ""
            bar.update(task, advance=1, best=best)
            _write_results(study, out, fixed)

        study.optimize(run_trial, n_trials=remaining, callbacks=[advance], catch=(FloatingPointError,))
    best_file = _write_results(study, out, fixed)
    if best_file is None:
        raise ValueError(f"--out: no trial of {out / 'study.sqlite'} completed; see trials.csv")
    console.print(_trial_table(completed_trials(study), study.best_trial.number))
    console.print(f"best {objective} {study.best_value:.4f} (trial {study.best_trial.number}); parameters: "
                  f"{best_file}\nretrain with: medrobust train --data {data} --model {model} --recipe {recipe} "
                  f"--params {best_file} --out RUN")
