"""The typed objects that cross the evaluation core's boundaries.

- :class:`LoadedModel`: a model ready to evaluate, with its checkpoint info and the data
  split opened the way it was trained.
- :class:`Case`: one case of that split prepared for its runs (tensors with B = 1, the
  model wrapped for the case's size, the clean prediction and its score).
- :class:`Outcome`: the score of one prediction (clean or perturbed).
- :class:`Row`: one row of the results store's ``runs`` table, one field per column.
- :class:`RunSettings`: what every run of one evaluation shares (seed, metrics, config hash).

No function here computes anything; :mod:`medrobust.evaluation.core` does. The module
imports no torch at run time (only for type checking), so the results store stays light.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medrobust.attacks.ssim import SSIMReference
    from medrobust.data.sources import Split
    from medrobust.models.checkpoint import CheckpointInfo
    from medrobust.units import IntensityMap


@dataclass
class LoadedModel:
    """A model and the data split it is evaluated on.

    Attributes:
        name: display name (a grid's ``models[i].name``; the key of its store rows).
        model: the network, image in model units -> logits, in eval mode.
        info: the parsed ``model.json`` (classes, ROI, IntensityMap, ...).
        split: the cases, normalised as the model was trained.

    Example:
        >>> import torch
        >>> from pathlib import Path
        >>> from medrobust.data.sources import Split
        >>> from medrobust.models.checkpoint import CheckpointInfo
        >>> info = CheckpointInfo(path=Path("model.json"), architecture="demo", kwargs={}, classes=["bg", "fg"])
        >>> split = Split(dataset=[], classes=["bg", "fg"], task="segmentation", spatial_dims=3, in_channels=1,
        ...               source=Path("dataset.json"), normalization="none")
        >>> LoadedModel("demo", torch.nn.Identity(), info, split).classes
        ['bg', 'fg']
    """

    name: str
    model: nn.Module
    info: CheckpointInfo
    split: Split

    @property
    def classes(self) -> list[str]:
        """The model's class names (index = label value)."""
        return list(self.info.classes)

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"``."""
        return str(self.split.task)


@dataclass
class Outcome:
    """The score of one prediction of one case.

    Attributes:
        score: the main metric: mean foreground Dice in [0, 1] (1.0 when the label and the
            prediction have no foreground at all) or 1/0 correct for a classifier.
        per_class: segmentation: {class name: Dice} over the foreground classes.
        hd95: segmentation, when asked: {class name: HD95 in mm}.
        nsd: segmentation, when asked: {class name: normalised surface Dice}.
        pred: classification: the predicted class index.
        prob: classification: the softmax probability of the true class.
        probs: classification: the whole softmax vector.

    Example:
        >>> Outcome(score=1.0, pred=2, prob=0.9, probs=[0.05, 0.05, 0.9]).columns("adv")["adv_pred"]
        2
    """

    score: float
    per_class: dict[str, float] | None = None
    hd95: dict[str, float] | None = None
    nsd: dict[str, float] | None = None
    pred: int | None = None
    prob: float | None = None
    probs: list[float] | None = None

    def columns(self, side: str) -> dict[str, Any]:
        """The store columns ``<side>_score``, ``<side>_per_class``, ... of this outcome.

        Args:
            side: ``"clean"`` or ``"adv"``.

        Returns:
            {column name: value}, one per field.
        """
        return {f"{side}_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class RunSettings:
    """What every run of one evaluation shares.

    Attributes:
        seed: the base seed; each run is seeded from (seed, model, perturbation, eps, case).
        config_hash: recorded in every row (the store refuses rows of another config).
        metrics: the optional metrics to compute: any of ``hd95``, ``nsd``, ``ssim``, ``psnr``.
        include_background: segmentation scores (Dice, HD95, NSD) count class 0 too (the
            VAFA papers' protocol); default False.
        nsd_tolerance_mm: the normalised surface Dice's tolerance in mm.
        per_channel_ranges: budgets in "1/255" of each (case, channel) range
            (:mod:`medrobust.attacks.channel_ranges`); None: on for multi-channel z-scored data.

    Example:
        >>> RunSettings(seed=0, config_hash="abc", metrics=frozenset({"ssim"})).wants("psnr")
        False
    """

    seed: int
    config_hash: str
    metrics: frozenset[str] = frozenset({"ssim", "psnr"})
    include_background: bool = False
    nsd_tolerance_mm: float = 1.0
    per_channel_ranges: bool | None = None

    def wants(self, metric: str) -> bool:
        """True when ``metric`` is to be computed."""
        return metric in self.metrics


def meta_spacing(meta: dict[str, Any]) -> list[float] | None:
    """The voxel spacing in mm of an item's metadata as floats (None when unknown).

    Example:
        >>> meta_spacing({"spacing": (1.5, 1.5, 3)})
        [1.5, 1.5, 3.0]
    """
    spacing = meta.get("spacing")
    return None if spacing is None else [float(v) for v in spacing]


@dataclass
class Case:
    """One case prepared for its runs.

    Attributes:
        id: the case id (a store key).
        item: the dataset item (``image``, ``label``, ``id``, ``meta``).
        x: image (1, C, *spatial), model units, on the evaluation device.
        y: label (1, 1, *spatial) int (segmentation) or (1,) (classification).
        imap: the case's IntensityMap (model units <-> raw units).
        model: the model, wrapped in a SlidingWindow when the case exceeds its ROI.
        clean_logits: the model's logits on ``x``: (1, K, *spatial) or (1, K).
        clean: the score of the clean prediction.
        data_range: width of the valid range in model units (SSIM / PSNR).
        ssim_ref: x's SSIM window statistics, computed once (None when SSIM is not asked).
    """

    id: str
    item: dict[str, Any]
    x: torch.Tensor
    y: torch.Tensor
    imap: IntensityMap
    model: nn.Module
    clean_logits: torch.Tensor
    clean: Outcome
    data_range: float
    ssim_ref: SSIMReference | None = None

    @property
    def segmentation(self) -> bool:
        """True for a segmentation case (a label map rather than a class index)."""
        return self.y.ndim > 1

    @property
    def spacing(self) -> list[float] | None:
        """The voxel spacing in mm from the case's metadata (None when unknown)."""
        return meta_spacing(self.item["meta"])


@dataclass
class Row:
    """One row of the store's ``runs`` table (see :mod:`medrobust.evaluation.store`).

    Key: (model, perturbation, eps_stated, case_id). ``kind`` is ``"attack"`` or
    ``"corruption"`` (then ``attack`` is the corruption, ``eps_stated`` its severity and
    ``eps_unit`` ``"severity"``).

    Example:
        >>> row = Row(config_hash="h", model="m", perturbation="pgd", kind="attack", attack="pgd", eps_stated=4.0,
        ...           eps_unit="1/255", case_id="c1", task="classification", score_name="accuracy",
        ...           clean_score=1.0, adv_score=0.0)
        >>> row.key
        ('m', 'pgd', 4.0, 'c1')
    """

    config_hash: str
    model: str
    perturbation: str
    kind: str
    attack: str
    eps_stated: float
    eps_unit: str
    case_id: str
    task: str
    score_name: str
    clean_score: float
    adv_score: float
    norm: str | None = None
    options_json: str | None = None
    eps_model: float | None = None
    eps_raw: float | None = None
    clean_per_class: dict[str, float] | None = None
    adv_per_class: dict[str, float] | None = None
    clean_hd95: dict[str, float] | None = None
    adv_hd95: dict[str, float] | None = None
    clean_nsd: dict[str, float] | None = None
    adv_nsd: dict[str, float] | None = None
    label: int | None = None
    clean_pred: int | None = None
    adv_pred: int | None = None
    clean_prob: float | None = None
    adv_prob: float | None = None
    clean_probs: list[float] | None = None
    adv_probs: list[float] | None = None
    linf_model: float | None = None
    l2_model: float | None = None
    linf_raw: float | None = None
    l2_raw: float | None = None
    iterate_rule: str | None = None
    method: str | None = None
    target: str | None = None
    target_success: float | None = None
    region: str | None = None
    region_fraction: float | None = None
    ssim: float | None = None
    psnr: float | None = None
    loss_initial: float | None = None
    loss_best: float | None = None
    attack_seconds: float | None = None
    seconds: float | None = None
    created: str | None = field(default=None)

    @property
    def key(self) -> tuple[str, str, float, str]:
        """The store key (model, perturbation, eps_stated, case_id)."""
        return (self.model, self.perturbation, float(self.eps_stated), self.case_id)

    def as_dict(self) -> dict[str, Any]:
        """{column: value} of every column."""
        return dataclasses.asdict(self)
