"""Cases made ready for their runs: a dataset item's tensors, windowed model and clean outcome.

- :func:`prepare_case` / :func:`prepare_cases`: dataset items -> their :class:`Case` (B = 1;
  consecutive items of one shape share one clean forward pass);
- :func:`score`: one prediction -> its :class:`Outcome` (the clean one here, the perturbed
  one in :func:`~medrobust.evaluation.core.evaluate_run`);
- :func:`valid_range`: a case's valid range in model units.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from medrobust import metrics
from medrobust.attacks.ssim import SSIMReference
from medrobust.evaluation.types import Case, LoadedModel, Outcome, RunSettings, meta_spacing
from medrobust.models.inference import infer, windowed
from medrobust.units import IntensityMap, budget_for_case


def score(logits: torch.Tensor, y: torch.Tensor, classes: Sequence[str], spacing: Sequence[float] | None = None,
          hd: bool = False, *, include_background: bool = False, nsd_mm: float | None = None) -> Outcome:
    """The :class:`Outcome` of one prediction (B = 1).

    Args:
        logits: (1, K, *spatial) or (1, K).
        y: (1, 1, *spatial) int labels or (1,) class index.
        classes: the K class names (index 0 = background for segmentation).
        spacing: voxel spacing in mm (HD95 only); None means 1 mm.
        hd: also compute HD95 per class.
        include_background: segmentation: count class 0 in the mean Dice and the per-class
            scores (the VAFA papers' protocol); default False (foreground classes only).
        nsd_mm: also compute the normalised surface Dice per class at this tolerance (mm).

    Returns:
        Segmentation: mean Dice over the foreground classes (with ``include_background``
        all classes; 1.0 when neither label nor prediction has any foreground) and the
        scores per class; classification: 1/0 correct, the predicted class,
        the true class's probability and the softmax vector.

    Example:
        >>> import torch
        >>> score(torch.tensor([[0.0, 2.0]]), torch.tensor([1]), ["a", "b"]).score
        1.0
        >>> y = torch.zeros(1, 1, 4, 4, dtype=torch.long); y[..., :2, :] = 1
        >>> logits = torch.cat([1 - y, y], dim=1).float()
        >>> score(logits, y, ["bg", "fg"]).per_class
        {'fg': 1.0}
    """
    if y.ndim == 1:
        probs = torch.softmax(logits.double(), dim=1)[0]
        pred = int(logits.argmax(1)[0])
        return Outcome(score=float(pred == int(y[0])), pred=pred, prob=float(probs[int(y[0])]), probs=probs.tolist())
    names = list(classes) if include_background else list(classes[1:])
    dice = metrics.dice_per_class(logits, y, len(classes), include_background=include_background)[0].double()
    out = Outcome(score=float(dice.nanmean()) if not dice.isnan().all() else 1.0, per_class=dict(zip(names, dice.tolist())))
    mm = list(spacing)[: y.ndim - 2] if spacing is not None else 1.0  # meta holds 3 values for 2D too
    if hd:
        out.hd95 = dict(zip(names, metrics.hd95(logits, y, len(classes), mm, include_background)[0].tolist()))
    if nsd_mm is not None:
        nsd = metrics.surface_dice(logits, y, len(classes), nsd_mm, mm, include_background)[0]
        out.nsd = dict(zip(names, nsd.tolist()))
    return out


def _nsd_mm(settings: RunSettings) -> float | None:
    return settings.nsd_tolerance_mm if settings.wants("nsd") else None


def valid_range(x: torch.Tensor, imap: IntensityMap) -> tuple[float, float]:
    """The valid range (low, high) of a case in model units (B = 1).

    Args:
        x: the case's image (1, C, *spatial) in model units (z-scored data: its own range).
        imap: the case's IntensityMap (its clip window, mapped to model units).

    Returns:
        (low, high) floats.

    Example:
        >>> import torch
        >>> valid_range(torch.rand(1, 1, 4, 4), IntensityMap(0.0, 1.0, (0.0, 1.0)))
        (0.0, 1.0)
    """
    lo, hi = budget_for_case("linf", 0.0, "model", x, imap).range_for(x)
    return float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0])


def prepare_case(lm: LoadedModel, item: dict[str, Any], settings: RunSettings, *, device: str | torch.device = "cpu",
                 roi_size: Sequence[int] | None = None, overlap: float = 0.25, sw_batch_size: int = 1) -> Case:
    """A dataset item made ready for its runs: tensors, windowed model, clean outcome.

    Args:
        lm: the model and its split.
        item: one dataset item (``image`` (C, *spatial), ``label``, ``id``, ``meta``).
        settings: the evaluation's settings (HD95 / SSIM wanted?).
        device: where the tensors go (the model must already be there).
        roi_size: the sliding-window ROI (default: the checkpoint's).
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward of the sliding window.

    Returns:
        The :class:`Case` (x (1, C, *spatial), y (1, 1, *spatial) or (1,)).

    Example:
        >>> import torch
        >>> from pathlib import Path
        >>> from medrobust.data.sources import Split
        >>> from medrobust.models.checkpoint import CheckpointInfo
        >>> item = {"image": torch.zeros(1, 4, 4), "label": 0, "id": "c0",
        ...         "meta": {"intensity": IntensityMap(0.0, 1.0, (0.0, 1.0)).to_dict()}}
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="demo", kwargs={}, classes=["a", "b"])
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> _ = torch.nn.init.zeros_(net[1].weight), torch.nn.init.zeros_(net[1].bias)  # logits tie: class 0
        >>> lm = LoadedModel("m", net, info, Split([item], ["a", "b"], "classification", 2, 1, Path("."), "none"))
        >>> case = prepare_case(lm, item, RunSettings(seed=0, config_hash="h"))
        >>> tuple(case.x.shape), case.clean.score, case.data_range
        ((1, 1, 4, 4), 1.0, 1.0)
    """
    return next(prepare_cases(lm, [item], settings, device=device, roi_size=roi_size, overlap=overlap,
                              sw_batch_size=sw_batch_size))


def prepare_cases(lm: LoadedModel, items: Iterable[dict[str, Any]], settings: RunSettings, *,
                  device: str | torch.device = "cpu", roi_size: Sequence[int] | None = None, overlap: float = 0.25,
                  sw_batch_size: int = 1, batch_size: int = 1) -> Iterator[Case]:
    """Dataset items made ready for their runs, in order; up to ``batch_size`` at a time.

    Consecutive items of equal image shape share one clean forward pass (a batch of up to
    ``batch_size``); each :class:`Case` is then exactly what :func:`prepare_case` gives (B = 1).
    Items are read lazily: a batch is prepared once it is full or the next shape differs.

    Args:
        lm: the model and its split.
        items: dataset items (``image`` (C, *spatial), ``label``, ``id``, ``meta``).
        settings: the evaluation's settings (HD95 / SSIM wanted?).
        device: where the tensors go (the model must already be there).
        roi_size: the sliding-window ROI (default: the checkpoint's).
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward of the sliding window.
        batch_size: items per clean forward pass (>= 1).

    Yields:
        One :class:`Case` per item, in the items' order.

    Example:
        >>> import torch
        >>> from pathlib import Path
        >>> from medrobust.data.sources import Split
        >>> from medrobust.models.checkpoint import CheckpointInfo
        >>> imap = IntensityMap(0.0, 1.0, (0.0, 1.0)).to_dict()
        >>> items = [{"image": torch.rand(1, 4, 4), "label": i % 2, "id": f"c{i}", "meta": {"intensity": imap}}
        ...          for i in range(3)]
        >>> info = CheckpointInfo(path=Path("m.json"), architecture="demo", kwargs={}, classes=["a", "b"])
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> lm = LoadedModel("m", net, info, Split(items, ["a", "b"], "classification", 2, 1, Path("."), "none"))
        >>> settings = RunSettings(seed=0, config_hash="h")
        >>> batched = list(prepare_cases(lm, items, settings, batch_size=2))
        >>> [c.id for c in batched], [c.clean.score for c in batched] == [
        ...     prepare_case(lm, item, settings).clean.score for item in items]
        (['c0', 'c1', 'c2'], True)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    group: list[dict[str, Any]] = []
    for item in items:
        if group and tuple(item["image"].shape) != tuple(group[0]["image"].shape):
            yield from _prepared(lm, group, settings, device, roi_size, overlap, sw_batch_size)
            group = []
        group.append(item)
        if len(group) == batch_size:
            yield from _prepared(lm, group, settings, device, roi_size, overlap, sw_batch_size)
            group = []
    if group:
        yield from _prepared(lm, group, settings, device, roi_size, overlap, sw_batch_size)


def _prepared(lm: LoadedModel, group: list[dict[str, Any]], settings: RunSettings, device: str | torch.device,
              roi_size: Sequence[int] | None, overlap: float, sw_batch_size: int) -> Iterator[Case]:
    """The cases of items of one shape, their clean logits from one forward pass."""
    xs = [item["image"].unsqueeze(0).to(device) for item in group]
    model = windowed(lm.model, xs[0], roi_size or lm.info.roi_size, overlap, sw_batch_size)
    batch_logits = infer(model, xs[0] if len(xs) == 1 else torch.cat(xs))
    for i, (item, x) in enumerate(zip(group, xs)):
        # a copy of each case's logits, so a case does not keep the whole batch's alive
        logits = batch_logits if len(xs) == 1 else batch_logits[i:i + 1].clone()
        yield _case(lm, item, x, model, logits, settings, device)


def _case(lm: LoadedModel, item: dict[str, Any], x: torch.Tensor, model: torch.nn.Module, logits: torch.Tensor,
          settings: RunSettings, device: str | torch.device) -> Case:
    y = torch.as_tensor(item["label"]).unsqueeze(0).to(device)
    imap = IntensityMap.from_dict(item["meta"]["intensity"])
    lo, hi = valid_range(x, imap)
    # SSIMReference equals metrics.ssim (MONAI's SSIMMetric, to 1e-5) but filters separably:
    # MONAI's dense 11^3 window cost ~7% of a 10-step PGD per row on the demo volumes.
    return Case(str(item["id"]), item, x, y, imap, model, logits,
                score(logits, y, lm.classes, meta_spacing(item["meta"]), settings.wants("hd95"),
                      include_background=settings.include_background, nsd_mm=_nsd_mm(settings)), hi - lo,
                SSIMReference(x, hi - lo) if settings.wants("ssim") else None)
