"""The evaluation core: one (model, perturbation, budget, case) -> one :class:`Row`.

Every runner (the grid, the ensemble settings, corruption runs, ``medrobust attack``)
calls these functions, so a run is perturbed, scored and recorded the same way wherever
it comes from:

- :func:`~medrobust.evaluation.cases.prepare_case` (:mod:`medrobust.evaluation.cases`): the
  case's tensors (B = 1), the model wrapped for its size, the clean prediction and its
  :class:`Outcome`;
- :func:`perturb`: the perturbed image of one grid entry at one level (an attack at one
  eps, or a corruption at one severity), seeded by :func:`run_seed`;
- :func:`evaluate_run`: perturb, predict, score, and the store :class:`Row` with the
  achieved norms, SSIM and PSNR.

Example:
    >>> import torch
    >>> from pathlib import Path
    >>> from medrobust.data.sources import Split
    >>> from medrobust.evaluation.cases import prepare_case
    >>> from medrobust.evaluation.specs import AttackSpec
    >>> from medrobust.models.checkpoint import CheckpointInfo
    >>> from medrobust.units import IntensityMap
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> item = {"image": torch.rand(1, 4, 4), "label": 1, "id": "c0",
    ...         "meta": {"intensity": IntensityMap(0.0, 255.0, (0.0, 1.0)).to_dict()}}
    >>> info = CheckpointInfo(path=Path("model.json"), architecture="demo", kwargs={}, classes=["a", "b"])
    >>> lm = LoadedModel("demo", net, info, Split([item], ["a", "b"], "classification", 2, 1, Path("."), "none"))
    >>> settings = RunSettings(seed=0, config_hash="h")
    >>> case = prepare_case(lm, item, settings)
    >>> spec = AttackSpec(attack="pgd", eps=[8], eps_unit="1/255", options={"steps": 3})
    >>> run = evaluate_run(lm, spec, 8.0, case, settings)
    >>> run.row.key, run.row.adv_score <= case.clean.score, round(run.row.linf_model, 4) <= round(8 / 255, 4)
    (('demo', 'pgd', 8.0, 'c0'), True, True)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from medrobust import metrics
from medrobust.attacks import Attack, get_attack
from medrobust.attacks.channel_ranges import ChannelRanges, channel_ranges_for
from medrobust.attacks.registry import attack_budget_kind, attack_names, attack_task
from medrobust.evaluation.cases import _nsd_mm, score
from medrobust.evaluation.certification import certify_row
from medrobust.evaluation.specs import AttackSpec, CertifySpec, CorruptionSpec
from medrobust.evaluation.types import Case, LoadedModel, Row, RunSettings
from medrobust.models.inference import infer
from medrobust.units import Budget, IntensityMap, budget_for_case

PerturbationSpec = AttackSpec | CorruptionSpec | CertifySpec
# the ``method`` note of an attack run with per-(case, channel) budgets (attacks/channel_ranges.py)
PER_CHANNEL_NOTE = "budget per (case, channel) range"
# the ``method`` note of an attack entry run with ``amp: true``
AMP_NOTE = "model forward in bf16 (autocast), loss, step and projection in fp32"


def run_seed(seed: int, model: str, perturbation: str, eps: float, case_id: str) -> int:
    """The deterministic 63-bit seed of one run, so a resumed evaluation repeats its numbers.

    Args:
        seed: the evaluation's base seed.
        model: the model's name (the run's store key is model, perturbation, eps, case_id).
        perturbation: the perturbation label.
        eps: the stated eps (or severity).
        case_id: the case id.

    Returns:
        An int in [0, 2**63).

    Example:
        >>> run_seed(0, "unet", "pgd", 4.0, "c1") == run_seed(0, "unet", "pgd", 4.0, "c1")
        True
        >>> run_seed(0, "unet", "pgd", 4.0, "c1") == run_seed(1, "unet", "pgd", 4.0, "c1")
        False
    """
    key = f"{seed}\x1f{model}\x1f{perturbation}\x1f{eps!r}\x1f{case_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def attack_for(spec: AttackSpec, eps: float, x: torch.Tensor, imap: IntensityMap) -> tuple[Budget, Attack]:
    """The budget and the configured attack of one grid entry at one eps.

    For a frequency attack (budget kind ``"dct"``) eps is VAFA's ``q_max`` and the budget
    carries only the valid range.

    Args:
        spec: the grid entry (attack name, norm, eps unit, options).
        eps: one of its eps, in ``spec.eps_unit``.
        x: the case's image (B, C, *spatial) (per-sample ranges of z-scored data).
        imap: the case's IntensityMap.

    Returns:
        (budget, attack).

    Raises:
        ValueError: a bad eps, unit or option (the message names it).

    Example:
        >>> import torch
        >>> spec = AttackSpec(attack="pgd", eps=[4], eps_unit="1/255", options={"steps": 5})
        >>> budget, attack = attack_for(spec, 4.0, torch.rand(1, 1, 8, 8), IntensityMap(0.0, 1.0, (0.0, 1.0)))
        >>> type(attack).__name__, round(float(budget.eps_for(torch.rand(1, 1, 8, 8))[0]) * 255, 3)
        ('PGD', 4.0)
    """
    options = {**spec.options, "targeted": True} if spec.target is not None else spec.options
    if attack_budget_kind(spec.attack) == "dct":
        budget = budget_for_case("linf", 0.0, "model", x, imap)
        return budget, get_attack(spec.attack, budget, **options, q_max=eps)
    budget = budget_for_case(spec.norm, eps, spec.eps_unit, x, imap)
    return budget, get_attack(spec.attack, budget, **options)


def check_fits(spec: AttackSpec, lm: LoadedModel) -> None:
    """Fail unless an attack entry fits the model: its task, and its target's and region's classes.

    Args:
        spec: the attack entry.
        lm: the model.

    Raises:
        ValueError: starting with the key at fault (``attack:``, ``target:`` or ``region:``)
            and naming the allowed values.

    Example:
        >>> from types import SimpleNamespace
        >>> lm = SimpleNamespace(task="segmentation", classes=["background", "gm"], name="m")
        >>> check_fits(AttackSpec(attack="pgd", eps=[2], target="least_likely"), lm)
        Traceback (most recent call last):
            ...
        ValueError: target: 'least_likely' is for classification; a segmentation model takes {map: {from: to}} or ...
    """
    task = attack_task(spec.attack)
    if task is not None and task != lm.task:
        fits = [n for n in attack_names() if attack_task(n) in (None, lm.task)]
        raise ValueError(f"attack: {spec.attack!r} is for {task} models; model {lm.name!r} is a {lm.task} model "
                         f"(allowed: {', '.join(fits)})")
    for part in (spec.parsed_target, spec.parsed_region):
        if part is not None:
            part.check(lm.classes, lm.task)


@dataclass
class Perturbed:
    """A perturbed image and what made it.

    Attributes:
        x: the perturbed image, shape and units of the case's ``x``.
        seconds: time taken by the attack or the corruption.
        budget: the attack's budget (None for a corruption).
        loss_initial / loss_best: the attack loss at the start and of the kept iterate.
        iterate_rule: which iterate the attack returned: ``"metric"``, ``"loss"`` (see
            :mod:`medrobust.attacks.outcome`) or ``"last"``; None for a corruption.
        method: the attack's :meth:`~medrobust.attacks.base.Attack.describe` (None for a corruption).
        params: a corruption's drawn parameters (JSON-ready); None for an attack.
    """

    x: torch.Tensor
    seconds: float
    budget: Budget | None = None
    loss_initial: float | None = None
    loss_best: float | None = None
    params: dict[str, Any] | None = None
    iterate_rule: str | None = None
    method: str | None = None
    channel_ranges: ChannelRanges | None = None

    def eps_model(self, x: torch.Tensor) -> float:
        """The attack's radius in model units (per-channel ranges: the widest channel's).

        Args:
            x: the clean case ``(1, C, *spatial)``.

        Returns:
            The radius; 0.0 for a corruption.
        """
        if self.budget is None:
            return 0.0
        eps = float(self.budget.eps_for(x)[0])
        return eps if self.channel_ranges is None else eps * float(self.channel_ranges.width.max())


def perturb(spec: AttackSpec | CorruptionSpec, level: float, case: Case, seed: int, model: torch.nn.Module | None = None,
            y: torch.Tensor | None = None, mask: torch.Tensor | None = None,
            per_channel: bool | None = None) -> Perturbed:
    """Apply one grid entry at one level (eps or severity) to a case.

    Args:
        spec: an attack entry or a corruption entry.
        level: the eps (attacks) or the severity 1-5 (corruptions).
        case: the prepared case.
        seed: the run's seed (:func:`run_seed`); attacks seed torch with it, corruptions
            draw from (seed, case id, corruption) so every model sees the same image.
        model: the model to attack (default: the case's; ensembles attack a member).
        y: the labels the attack gets (default: the case's; a targeted entry's targets).
        mask: the region the attack may change ``(1, 1, *spatial)`` (None: everywhere).
        per_channel: budgets in "1/255" of each channel's own range
            (:mod:`medrobust.attacks.channel_ranges`); None: on for multi-channel z-scored data.

    Returns:
        The :class:`Perturbed` image.

    Example:
        >>> import torch
        >>> x = torch.rand(1, 1, 8, 8)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        >>> imap = IntensityMap(0.0, 1.0, (0.0, 1.0))
        >>> from medrobust.evaluation.types import Outcome
        >>> case = Case("c0", {"meta": {}}, x, torch.tensor([1]), imap, net, net(x), Outcome(1.0), 1.0)
        >>> done = perturb(AttackSpec(attack="fgsm", eps=[8], eps_unit="1/255"), 8.0, case, seed=0)
        >>> bool((done.x - x).abs().max() <= 8 / 255 + 1e-6), done.params is None
        (True, True)
    """
    from medrobust.corruptions import corrupt

    t0 = time.perf_counter()
    if isinstance(spec, CorruptionSpec):
        meta = case.item["meta"]
        x_c, params = corrupt(case.x[0], spec.corruption, int(level), seed=seed, case_id=case.id,
                              affine=meta.get("grid_affine", meta.get("affine")), intensity=case.imap,
                              through_plane=spec.options.get("through_plane"))
        return Perturbed(x_c.unsqueeze(0), time.perf_counter() - t0, params=params)
    torch.manual_seed(seed)
    net, x = case.model if model is None else model, case.x
    ranges = (channel_ranges_for(per_channel, x, case.imap, spec.eps_unit)
              if attack_budget_kind(spec.attack) != "dct" else None)
    if ranges is not None:  # the attack runs where every channel spans [0, 1]
        x, net = ranges.to_unit(x), ranges.model(net)
    budget, attack = attack_for(spec, level, x, case.imap)
    # amp: only the model's forward runs in bfloat16; Attack.run keeps its own arithmetic in float32
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if spec.amp else contextlib.nullcontext():
        result = attack.run(net, x, case.y if y is None else y, mask)
    history = result.loss_history
    method = (attack.describe() + (f"; {PER_CHANNEL_NOTE}" if ranges is not None else "")
              + (f"; {AMP_NOTE}" if spec.amp else ""))
    return Perturbed(result.x_adv if ranges is None else ranges.restore(case.x, x, result.x_adv),
                     time.perf_counter() - t0, budget, float(history[0, 0]) if history.numel() else None,
                     float(result.best_loss[0]) if result.best_loss.numel() else None,
                     iterate_rule=attack.keep if attack.return_best else "last", method=method, channel_ranges=ranges)


@dataclass
class Run:
    """One evaluated run (see :func:`evaluate_run`).

    Attributes:
        row: its store row.
        x: the perturbed image (1, C, *spatial), model units.
        logits: the model's logits on ``x``: (1, K, *spatial) or (1, K).
        perturbed: what :func:`perturb` returned (timings, budget, corruption parameters).
    """

    row: Row
    x: torch.Tensor
    logits: torch.Tensor
    perturbed: Perturbed = field(repr=False)


def evaluate_run(lm: LoadedModel, spec: PerturbationSpec, level: float, case: Case, settings: RunSettings) -> Run:
    """Evaluate one (model, perturbation, level, case): perturb, predict, score, and its :class:`Row`.

    Args:
        lm: the model (its name keys the row).
        spec: the grid entry.
        level: its eps or severity.
        case: the prepared case.
        settings: seed, config hash and optional metrics.

    Returns:
        The :class:`Run` (row with timings, perturbed image, logits on it). The module's
        docstring has a worked example.
    """
    corruption = isinstance(spec, CorruptionSpec)
    seed = settings.seed if corruption else run_seed(settings.seed, lm.name, spec.label, float(level), case.id)
    if isinstance(spec, CertifySpec):  # a lower bound, not a perturbation: no image, no norms
        row = certify_row(lm, spec, float(level), case, settings, seed)
        return Run(row, case.x, case.clean_logits, Perturbed(case.x, row.seconds or 0.0))
    t0 = time.perf_counter()
    target = spec.parsed_target if isinstance(spec, AttackSpec) else None
    y_target = None if target is None else target.labels(case.y, case.clean_logits, lm.classes, seed, case.id)
    region = spec.parsed_region if isinstance(spec, AttackSpec) else None
    mask = None if region is None else region.mask(case.x, case.y, lm.classes, case.id, case.spacing)
    done = perturb(spec, level, case, seed, y=y_target, mask=mask, per_channel=settings.per_channel_ranges)
    logits = infer(case.model, done.x)
    adv = score(logits, case.y, lm.classes, case.spacing, settings.wants("hd95"),
                include_background=settings.include_background, nsd_mm=_nsd_mm(settings))
    norms: dict[str, Any] = {k: float(v.reshape(-1)[0]) for k, v in metrics.perturbation_norms(case.x, done.x, case.imap).items()}
    with torch.no_grad():
        ssim = float(case.ssim_ref(done.x)[0]) if case.ssim_ref is not None else None
    if isinstance(spec, CorruptionSpec):
        details: dict[str, Any] = {"attack": spec.corruption, "norm": None, "eps_unit": "severity",
                                   "options_json": json.dumps({"options": spec.options, "params": done.params},
                                                              sort_keys=True)}
    else:
        assert done.budget is not None
        eps_model = done.eps_model(case.x)
        details = {"attack": spec.attack, "norm": spec.norm, "eps_unit": spec.eps_unit,
                   "options_json": json.dumps({**spec.options, **({"amp": "bf16"} if spec.amp else {})},
                                              sort_keys=True), "eps_model": eps_model,
                   "eps_raw": float(case.imap.model_delta_to_raw(eps_model)), "iterate_rule": done.iterate_rule,
                   "method": done.method}
        if region is not None and mask is not None:
            details.update(region=region.describe(), region_fraction=float(mask.mean()))
        if target is not None and y_target is not None:
            details.update(target=target.describe(), target_success=target.success(logits, case.y, y_target))
    row = Row(config_hash=settings.config_hash, model=lm.name, perturbation=spec.label,
              kind="corruption" if corruption else "attack", eps_stated=float(level), case_id=case.id, task=lm.task,
              score_name="dice_mean" if case.segmentation else "accuracy",
              **case.clean.columns("clean"), **adv.columns("adv"),
              label=None if case.segmentation else int(case.y[0]), **norms, ssim=ssim,
              psnr=float(metrics.psnr(case.x, done.x, case.data_range)[0]) if settings.wants("psnr") else None,
              loss_initial=done.loss_initial, loss_best=done.loss_best, attack_seconds=done.seconds, **details)
    row.seconds = time.perf_counter() - t0
    return Run(row, done.x, logits, done)
