"""``medrobust train``: train a registry model with a recipe on a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from medrobust.cli import app
from medrobust.cli.options import parse_json_object, parse_size
from medrobust.data.sources import Split, open_split
from medrobust.models.registry import build_model
from medrobust.training import RECIPES, FitResult, TrainConfig, build_recipe, fit
from medrobust.training.loop import seed_everything
from medrobust.units import IntensityMap

console = Console()


def _check_classification(data: Path, train: Split, val: Split) -> None:
    """Train and val must name the same classes; images of several sizes need a stated size."""
    if val.classes != train.classes:
        raise ValueError(f"{data}: the train split has classes {train.classes} but the val split has {val.classes}")
    shapes = sorted({tuple(train.dataset[i]["image"].shape[1:]) for i in range(len(train.dataset))})  # type: ignore[arg-type]
    if len(shapes) > 1:
        listed = ", ".join("x".join(map(str, s)) for s in shapes[:4]) + (" ..." if len(shapes) > 4 else "")
        raise ValueError(f"--patch-size: {data} holds images of {len(shapes)} sizes ({listed}); state the size "
                         "to resize them to, e.g. --patch-size 64,64")


def train_model(data: Path, model_name: str, out: Path, *, recipe: str = "standard",
                recipe_params: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None,
                config: TrainConfig | None = None, normalization: str | None = None,
                patch_size: tuple[int, ...] | None = None, augment: bool = False,
                progress: bool = True) -> FitResult:
    """Build the model for the dataset's shape and classes, then run the training loop.

    The train split may be cropped/padded to ``patch_size``; validation runs on whole
    volumes (through SlidingWindow when they exceed ``config.roi_size``). Classification
    images of every split are resized to ``patch_size`` (recorded as ``extra["image_size"]``).
    """
    config = config or TrainConfig()
    train = open_split(data, "train", normalization=normalization, spatial_size=patch_size, augment=augment)
    size = patch_size if train.task == "classification" else None
    val = open_split(data, "val", normalization=normalization, spatial_size=size)
    if train.task == "classification":
        _check_classification(data, train, val)
    kwargs = {"spatial_dims": train.spatial_dims, "in_channels": train.in_channels,
              "out_channels": len(train.classes), **(model_kwargs or {})}
    if model_name in ("unetr", "swinunetr") and "img_size" not in kwargs:
        kwargs["img_size"] = config.roi_size or patch_size or tuple(train.dataset[0]["image"].shape[1:])
    seed_everything(config.seed)  # initial weights from the seed, not from what ran before in this process
    model = build_model(model_name, **kwargs)
    # A CT window (or no normalisation) is one map for the whole dataset; per-case z-score or
    # min-max maps differ per case, so the checkpoint records only the normalisation's name.
    fixed = train.normalization.startswith("ct:") or train.normalization == "none"
    intensity = IntensityMap.from_dict(train.dataset[0]["meta"]["intensity"]) if fixed else None
    return fit(model, build_recipe(recipe, **(recipe_params or {})), train.dataset, val.dataset, config, out,
               classes=train.classes, intensity=intensity,
               extra={"normalization": train.normalization, **({"image_size": list(size)} if size else {})},
               progress=progress)


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
                              "densenet121, resnet18/34/50, efficientnet-b0."),
    out: Path = typer.Option(..., "--out", help="Run folder: model.json + model.safetensors (best on validation), "
                             "last/ (resume state), history.csv."),
    recipe: str = typer.Option("standard", "--recipe", help=f"Training recipe: {', '.join(sorted(RECIPES))}."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Training epochs."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Cases per batch (per process under torchrun)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-5, "--weight-decay", help="AdamW weight decay."),
    scheduler: str = typer.Option("cosine", "--scheduler", help="cosine, plateau or none."),
    roi_size: Optional[str] = typer.Option(None, "--roi-size", help="Model input size, e.g. 64,64,64; larger "
                                           "volumes are validated with a sliding window."),
    patch_size: Optional[str] = typer.Option(None, "--patch-size", help="Crop/pad training cases to this size."),
    normalization: Optional[str] = typer.Option(None, "--normalization", help="zscore, minmax, none, or "
                                                "ct:LOW,HIGH (HU window to [0,1]). Default: zscore for NIfTI."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random flips, affine and intensity jitter."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights, data order and augmentation."),
    amp: str = typer.Option("none", "--amp", help="Mixed precision: none, bf16, fp16 (fp16 on GPU only)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/last if present."),
    params: Optional[str] = typer.Option(None, "--params", help="Recipe parameters as JSON or a .json file "
                                         "(e.g. the best parameters written by `medrobust tune`)."),
    model_kwargs: Optional[str] = typer.Option(None, "--model-kwargs", help="Extra network kwargs as JSON."),
    select: str = typer.Option("clean", "--select", help="Keep the epoch with the best validation score that is "
                               "clean, robust (under the --select-* attack: early stopping against robust and "
                               "catastrophic overfitting of adversarial training) or mean (their average). A constant classifier "
                               "keeps balanced accuracy 0.5 clean and under any attack, so robust and mean can keep "
                               "such an epoch when no other one does better: check the kept epoch's clean score."),
    select_attack: str = typer.Option("pgd", "--select-attack", help="Attack of robust selection."),
    select_eps: float = typer.Option(4.0, "--select-eps", help="L-inf eps of robust selection."),
    select_eps_unit: str = typer.Option("1/255", "--select-eps-unit", help="1/255, HU, raw or model."),
    select_steps: int = typer.Option(10, "--select-steps", min=1, help="Attack steps of robust selection."),
) -> None:
    """Train a model; the best checkpoint is chosen on the validation split only."""
    recipe_params = parse_json_object(params, "--params")
    loop_keys = {k: recipe_params.pop(k) for k in ("lr", "weight_decay", "epochs", "batch_size") if k in recipe_params}
    config = _train_config(**{"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                              "scheduler": scheduler, "roi_size": parse_size(roi_size, "--roi-size"), "seed": seed,
                              "amp": amp, "device": device, "resume": resume, "select": select,
                              "select_attack": {"attack": select_attack, "eps": select_eps,
                                                "eps_unit": select_eps_unit, "steps": select_steps},
                              **loop_keys})  # --params wins
    result = train_model(data, model, out, recipe=recipe, recipe_params=recipe_params,
                         model_kwargs=parse_json_object(model_kwargs, "--model-kwargs"), config=config,
                         normalization=normalization, patch_size=parse_size(patch_size, "--patch-size"),
                         augment=augment)
    console.print(f"best validation score {result.best_metric:.4f} at epoch {result.best_epoch}; "
                  f"checkpoint: {result.checkpoint}")
