"""Validation metrics for model selection (never on the test split), clean or under attack.

Adversarially trained models overfit robustly (Rice et al. 2020) and single-step recipes can
collapse within one epoch (Wong et al. 2020: "catastrophic overfitting"), so picking the
checkpoint by its clean score can keep a model that no longer resists the attack it was
trained against. :func:`selection_metrics` also scores the validation cases attacked by a
fixed :class:`RobustEvaluation`, and picks by the ``clean``, ``robust`` or ``mean`` score.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import Dataset

from medrobust.attacks.channel_ranges import attack_batch, channel_ranges_for
from medrobust.attacks.registry import attack_names, get_attack
from medrobust.metrics import balanced_accuracy, dice_per_class
from medrobust.models.inference import infer, windowed
from medrobust.units import IntensityMap, Unit, budget_for_case

Criterion = Literal["clean", "robust", "mean"]
CRITERIA: tuple[str, ...] = ("clean", "robust", "mean")


class RobustEvaluation(BaseModel):
    """The fixed attack of robust validation.

    L-inf ``eps`` in ``eps_unit`` of each case's intensity map (see
    :func:`medrobust.units.budget_for_case`), ``steps`` iterations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: str = "pgd"
    eps: float = Field(4.0, gt=0, allow_inf_nan=False)
    eps_unit: Unit = "1/255"
    steps: int = Field(10, ge=1)

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        if name.lower() not in attack_names():
            raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(attack_names())}")
        return name


def validate(model: nn.Module, dataset: Dataset | Sequence[dict[str, Any]], *, roi_size: Sequence[int] | None,
             overlap: float, device: torch.device, num_classes: int) -> dict[str, float]:
    """Score ``model`` on every case of ``dataset``, one case at a time.

    Returns:
        Segmentation: ``dice_<k>`` for each foreground class k (background excluded) and
        ``score`` = their mean. Classification: ``accuracy``, ``balanced_accuracy`` and
        ``score`` = balanced accuracy.
    """
    logits_all, labels_all, dices = [], [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        x = item["image"].unsqueeze(0).to(device)
        y = torch.as_tensor(item["label"]).to(device)
        logits = infer(model, x, roi_size, overlap)
        if y.ndim == 0:
            logits_all.append(logits.float().cpu())
            labels_all.append(y.reshape(1).cpu())
        else:
            dices.append(dice_per_class(logits.float(), y.unsqueeze(0), num_classes).cpu())
    if dices:
        per_class = torch.cat(dices).nanmean(dim=0)
        out = {f"dice_{k + 1}": float(v) for k, v in enumerate(per_class)}
        out["score"] = float(per_class.nanmean())
        return out
    logits = torch.cat(logits_all)
    labels = torch.cat(labels_all)
    acc = float((logits.argmax(1) == labels).float().mean())
    bacc = float(balanced_accuracy(logits, labels))
    return {"accuracy": acc, "balanced_accuracy": bacc, "score": bacc}


def attacked_items(model: nn.Module, dataset: Dataset | Sequence[dict[str, Any]], evaluation: RobustEvaluation, *,
                   roi_size: Sequence[int] | None, overlap: float, device: torch.device) -> list[dict[str, Any]]:
    """The items of ``dataset`` with each image replaced by its adversarial version.

    Every case is attacked whole (through SlidingWindow when it exceeds ``roi_size``) in its
    own intensity map (``item["meta"]["intensity"]``; without one, the case's own range; a
    multi-channel z-scored case in each channel's own range, as evaluation does by default);
    images stay (C, *S). Random starts come from a fixed seed, so every call attacks alike;
    the caller's RNG state and the model's training flag are restored afterwards.
    """
    was_training = model.training
    model.eval()
    items = []
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the same random starts at every epoch; the caller's RNG untouched
        torch.manual_seed(0)
        for i in range(len(dataset)):  # type: ignore[arg-type]
            item = dataset[i]
            x = item["image"].unsqueeze(0).to(device)
            y = torch.as_tensor(item["label"]).to(device)
            y = y.reshape(1) if y.ndim == 0 else y.unsqueeze(0)
            meta = item.get("meta", {}).get("intensity")
            imap = IntensityMap.from_dict(meta) if meta else None
            x_adv = attack_batch(lambda b, imap=imap: get_attack(evaluation.attack, budget_for_case(  # type: ignore[misc]
                "linf", evaluation.eps, evaluation.eps_unit, b, imap), steps=evaluation.steps),
                windowed(model, x, roi_size, overlap), x, y,
                channel_ranges_for(None, x, imap, evaluation.eps_unit))
            items.append({**item, "image": x_adv[0].detach().cpu()})
    model.train(was_training)
    return items


def selection_metrics(criterion: Criterion, model: nn.Module, dataset: Dataset | Sequence[dict[str, Any]],
                      evaluation: RobustEvaluation, *, roi_size: Sequence[int] | None, overlap: float,
                      device: torch.device, num_classes: int) -> dict[str, float]:
    """:func:`validate`'s clean metrics plus ``clean_score`` and the criterion's ``score``.

    Unless ``criterion`` is ``clean``, also ``robust_score`` (the score on the cases attacked
    by ``evaluation``). ``score`` is the criterion's value: clean, robust, or their mean.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")
    kw: dict[str, Any] = {"roi_size": roi_size, "overlap": overlap, "device": device}
    metrics = validate(model, dataset, num_classes=num_classes, **kw)
    metrics["clean_score"] = clean = metrics["score"]
    if criterion == "clean":
        return metrics
    robust = validate(model, attacked_items(model, dataset, evaluation, **kw), num_classes=num_classes, **kw)["score"]
    metrics["robust_score"] = robust
    metrics["score"] = robust if criterion == "robust" else (clean + robust) / 2
    return metrics
