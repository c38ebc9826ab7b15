"""``medrobust train``: train a registry model with a recipe on a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from medrobust.cli import app
from medrobust.cli.options import check_out_folder, parse_json_object, parse_size
from medrobust.tracking import check_tracker
from medrobust.training import RECIPES, TrainConfig
from medrobust.training.api import train_model

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim


def _train_config(**values: Any) -> TrainConfig:
    """TrainConfig from the flags; a bad value raises a ValueError naming its flag."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        flag = f"--select-{loc[-1]}" if loc[0] == "select_attack" else f"--{loc[0]}"
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{flag.replace('_', '-')}: {message}") from None


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    model: str = typer.Option("unet", "--model", help="Registry name: unet, basicunet, segresnet, unetr, swinunetr, "
                              "dynunet, densenet121, resnet18/34/50, efficientnet-b0."),
    out: Path = typer.Option(..., "--out", help="Run folder: model.json + model.safetensors (best on validation), "
                             "last/ (resume state), history.csv."),
    recipe: str = typer.Option("standard", "--recipe", help=f"Training recipe: {', '.join(sorted(RECIPES))}."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Training epochs."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Cases per batch (per process under torchrun)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-5, "--weight-decay", help="AdamW weight decay."),
    scheduler: str = typer.Option("cosine", "--scheduler", help="cosine, plateau or none."),
    roi_size: str | None = typer.Option(None, "--roi-size", help="Model input size, e.g. 64,64,64; larger "
                                           "volumes are validated with a sliding window. Default: none when the volumes "
                                           "suit the network, else chosen from the data (printed, kept in "
                                           "model.json)."),
    patch_size: str | None = typer.Option(None, "--patch-size", help="Crop/pad training cases to this size. "
                                             "Default: as --roi-size."),
    normalization: str | None = typer.Option(None, "--normalization", help="zscore, minmax, none, or "
                                                "ct:LOW,HIGH (HU window to [0,1]). Default: zscore for NIfTI."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random flips, affine and intensity jitter."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and augmentation."),
    amp: str = typer.Option("none", "--amp", help="Mixed precision: none, bf16, fp16 (fp16 on GPU only)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/last if present."),
    restart: bool = typer.Option(False, "--restart", help="Start over although OUT holds a run to resume (its "
                                 "last/ state is removed)."),
    resume_anyway: bool = typer.Option(False, "--resume-anyway", help="Resume although the inputs or flags differ "
                                       "from those OUT/provenance.json recorded (the new ones are recorded)."),
    init: Path | None = typer.Option(None, "--init", help="Start from this checkpoint's weights (model.json or "
                                     "its folder; fine-tuning a clean model): the same --model and --model-kwargs "
                                     "are needed, the optimizer starts fresh."),
    params: str | None = typer.Option(None, "--params", help="Recipe parameters as JSON or a .json file "
                                         "(e.g. the best parameters written by `medrobust tune`)."),
    model_kwargs: str | None = typer.Option(None, "--model-kwargs", help="Extra network kwargs as JSON."),
    select: str = typer.Option("clean", "--select", help="Keep the epoch with the best validation score that is "
                               "clean, robust (under the --select-* attack: early stopping against robust and "
                               "catastrophic overfitting of adversarial training) or mean (their average). A constant classifier "
                               "keeps balanced accuracy 0.5 clean and under any attack, so robust and mean can keep "
                               "such an epoch when no other one does better: check the kept epoch's clean score."),
    select_attack: str = typer.Option("pgd", "--select-attack", help="Attack of robust selection."),
    select_eps: float = typer.Option(4.0, "--select-eps", help="L-inf eps of robust selection."),
    select_eps_unit: str = typer.Option("1/255", "--select-eps-unit", help="1/255, HU, raw or model."),
    select_steps: int = typer.Option(10, "--select-steps", min=1, help="Attack steps of robust selection."),
    log: str = typer.Option("none", "--log", help="Experiment tracking: none, tensorboard (event files in "
                            "OUT/tensorboard; extra medrobust[log]) or mlflow (MLflow's tracking URI): each "
                            "epoch's losses, validation scores and self-adaptive schedule."),
) -> None:
    """Train a model; the best checkpoint is chosen on the validation split only."""
    check_out_folder(out, "--out")
    check_tracker(log, "--log")
    recipe_params = parse_json_object(params, "--params")
    loop_keys: dict[str, Any] = {k: recipe_params.pop(k) for k in ("lr", "weight_decay", "epochs", "batch_size")
                                 if k in recipe_params}
    config = _train_config(**{"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                              "scheduler": scheduler, "roi_size": parse_size(roi_size, "--roi-size"), "seed": seed,
                              "amp": amp, "device": device, "resume": resume, "select": select,
                              "select_attack": {"attack": select_attack, "eps": select_eps,
                                                "eps_unit": select_eps_unit, "steps": select_steps},
                              **loop_keys})  # --params wins
    result = train_model(data, model, out, recipe=recipe, recipe_params=recipe_params,
                         model_kwargs=parse_json_object(model_kwargs, "--model-kwargs"), config=config,
                         normalization=normalization, patch_size=parse_size(patch_size, "--patch-size"),
                         augment=augment, init=init, restart=restart, resume_anyway=resume_anyway,
                         log=console.print, tracking=log)
    console.print(f"best validation score {result.best_metric:.4f} at epoch {result.best_epoch}; "
                  f"checkpoint: {result.checkpoint}")
