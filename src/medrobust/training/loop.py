"""The one training loop (design.md section 6).

Epochs, AdamW, a cosine or plateau schedule, validation (through ``SlidingWindow`` when the
volumes exceed the ROI), the best checkpoint chosen on the **validation** split only (by
its clean score, or with ``select="robust"``/``"mean"`` by its score under a fixed attack:
early stopping against robust and catastrophic overfitting), resume from the last epoch,
rich progress, determinism from a seed, and data parallelism under ``torchrun``. What a batch contributes to the loss is the recipe's business.

Files in ``out_dir``:
    model.safetensors + model.json   best checkpoint on validation (what users keep)
    last/state.*                     model, optimizer, scheduler, recipe state, epoch
    history.csv                      one row per epoch
"""
from __future__ import annotations

import csv
import io
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.transforms import Randomizable
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medrobust.data.io import atomic_path
from medrobust.data.transforms import collate
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.devices import resolve_device
from medrobust.tracking import Tracker
from medrobust.training.distributed import average_gradients, barrier, broadcast_float, init_world
from medrobust.training.recipes import Recipe, StepInfo
from medrobust.training.state import load_state, save_state
from medrobust.training.validation import Criterion, RobustEvaluation, selection_metrics
from medrobust.units import IntensityMap


class TrainConfig(BaseModel):
    """Loop settings; validated (unknown keys are errors).

    ``select`` picks the checkpoint by the validation score that is ``clean``, ``robust``
    (under ``select_attack``, L-inf, every case attacked whole) or the ``mean`` of the two.
    A constant classifier keeps balanced accuracy 0.5 clean and under any attack, so ``robust``
    and ``mean`` can keep such an epoch when no later one does better (history.csv shows it).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    val_every: int = Field(1, ge=1)
    seed: int = 0
    roi_size: tuple[int, ...] | None = None
    overlap: float = Field(0.25, ge=0, lt=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    num_workers: int = Field(0, ge=0)
    resume: bool = True
    device: str = "auto"
    select: Criterion = "clean"
    select_attack: RobustEvaluation = RobustEvaluation()


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the best validation metric, its epoch, per-epoch history."""

    best_metric: float
    best_epoch: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reseed_epoch(dataset: Dataset, seed: int, epoch: int) -> None:
    """Every epoch draws from (seed, epoch) alone, so a resumed run repeats an uninterrupted one."""
    seed_everything(seed * 100_003 + epoch)
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, Randomizable):
        transform.set_random_state(seed=(seed * 100_003 + epoch) % 2**32)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    return None


def _autocast(device: torch.device, amp: str) -> Any:
    if amp == "none":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def fit(model: nn.Module, recipe: Recipe, train_set: Dataset, val_set: Dataset, config: TrainConfig,
        out_dir: str | Path, *, classes: Sequence[str], intensity: IntensityMap | None = None,
        extra: dict[str, Any] | None = None, progress: bool = True, tracker: Tracker | None = None) -> FitResult:
    """Train ``model`` with ``recipe``; keep the best checkpoint on ``val_set``.

    Args:
        model: any nn.Module from images to logits (built by ``build_model`` so it can be saved).
        recipe: decides the batch loss (see :mod:`medrobust.training.recipes`).
        train_set: dataset of dicts {"image", "label", ...} (``make_dataset``).
        val_set: the validation dataset, same form; picks the best checkpoint.
        config: loop settings.
        out_dir: output folder (created).
        classes: class names (K entries), written into the checkpoint.
        intensity: the dataset's IntensityMap (when one map fits all cases), for the checkpoint.
        extra: more JSON-able facts for the checkpoint (e.g. the normalisation's name).
        progress: show a progress bar.
        tracker: also receives each epoch's row (main process only), e.g. TensorBoard.

    Returns:
        FitResult with the best validation metric (mean foreground Dice for segmentation,
        balanced accuracy for classification) and the epoch it was reached.
    """
    out = Path(out_dir)
    device = resolve_device(config.device)
    world = init_world(device)
    seed_everything(config.seed)
    model.to(device)
    recipe.intensity = intensity
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
    sampler: DistributedSampler[Any] = DistributedSampler(train_set, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.num_workers)
    start_epoch, best, best_epoch, history = 0, -math.inf, -1, []
    last = out / "last"
    if config.resume and (last / "state.json").exists():
        state = load_state(last)
        if state["recipe"] != recipe.name:
            raise ValueError(f"{last}: resume state was written by recipe {state['recipe']!r}, not {recipe.name!r}; "
                             "use another --out or --no-resume")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"{last}: the resume state holds another architecture than this model "
                             f"({str(err).splitlines()[0]}); use another --out or --no-resume") from None
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        recipe.load_state_dict(state.get("recipe_state", {}))
        start_epoch, best, best_epoch, history = state["epoch"] + 1, state["best"], state["best_epoch"], state["history"]
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    spec_extra = {**(extra or {}), "recipe_params": recipe.params(), "train_config": config.model_dump(mode="json")}

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not (progress and world.is_main), transient=False) as bar:
        epoch_task = bar.add_task("epochs", total=config.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            _reseed_epoch(train_set, config.seed, epoch)
            sampler.set_epoch(epoch)
            model.train()
            batch_task = bar.add_task(f"epoch {epoch + 1}", total=len(loader), info="")
            sums: dict[str, float] = {}
            for it, batch in enumerate(loader):
                x, y = batch["image"].to(device), batch["label"].to(device)
                for _ in range(recipe.replays):  # > 1 only for minibatch replay (free_at)
                    optimizer.zero_grad(set_to_none=True)
                    with _autocast(device, config.amp):
                        loss, logs = recipe.batch_loss(model, x, y, StepInfo(epoch, it, config.epochs, scaler))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch + 1}, "
                                                 f"batch {it + 1}; lower --lr or check the data for NaN")
                    (scaler.scale(loss) if scaler else loss).backward()
                    recipe.after_backward(StepInfo(epoch, it, config.epochs, scaler))
                    average_gradients(model, world)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + v / recipe.replays
                bar.update(batch_task, advance=1, info=f"loss {float(loss.detach()):.4f}")
            bar.remove_task(batch_task)
            row: dict[str, float] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v / max(len(loader), 1) for k, v in sums.items()})
            row.update(recipe.on_epoch_end(epoch, row))
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
                metrics = selection_metrics(config.select, model, val_set, config.select_attack,
                                            roi_size=config.roi_size, overlap=config.overlap, device=device,
                                            num_classes=len(classes)) if world.is_main else {"score": 0.0}
                score = broadcast_float(metrics["score"], world)
                row.update({f"val_{k}": v for k, v in metrics.items()})
                if score > best:
                    best, best_epoch = score, epoch + 1
                    if world.is_main:
                        save_checkpoint(out, model, classes=list(classes), intensity=intensity,
                                        roi_size=config.roi_size, recipe=recipe.name,
                                        extra={**spec_extra, "val_score": score, "epoch": epoch + 1})
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(score)
            if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if world.is_main:
                save_state(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                  "recipe": recipe.name, "recipe_state": recipe.state_dict(), "epoch": epoch,
                                  "best": best, "best_epoch": best_epoch, "history": history})
                _write_history(out / "history.csv", history)
                if tracker is not None:
                    tracker.log(epoch + 1, row)
            barrier(world)
            bar.update(epoch_task, advance=1, info=f"val {best:.3f} (best, epoch {best_epoch})")
    return FitResult(best_metric=best, best_epoch=best_epoch, checkpoint=out / "model.json", history=history)
