"""The evaluation grid runner: models x perturbations x budgets x cases -> results.sqlite.

``run_grid(config)`` first checks everything that can be checked (checkpoints load, the
split has cases whose classes fit each model, every attack builds with its options and
budgets, an existing store was written by this very config) and writes nothing when any
check fails. It then loops model -> case -> perturbation -> eps (so each case is loaded
and its clean prediction computed once per model), skips runs already in the store,
and writes one row per run in its own transaction. Every run is seeded from
``(seed, model, perturbation, eps, case)``, so a resumed grid gives the same numbers as an
uninterrupted one. Corruption entries run through ``corruption_runs`` (severities in
place of eps, one row per severity, the same resume key).

Under ``torchrun`` (WORLD_SIZE > 1) cases are sharded by rank; each rank writes its own
``results.rank{r}.sqlite`` and rank 0 merges them after a barrier (no pickling between
ranks). Rank 0 then writes the gradient-masking checks and ``results.csv``. The report is
written by the caller (``medrobust.report.write_report``): evaluation never imports report.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from medrobust.evaluation.config import AttackSpec, CorruptionSpec, GridConfig, GridConfigError, load_config
from medrobust.evaluation.corruption_runs import run_corruption
from medrobust.evaluation.examples import (EXAMPLES_DIR, ExampleKeeper, drop_of, example_name, save_adversarial,
                                           save_example)
from medrobust.evaluation.ensembles import run_grid_ensembles
from medrobust.evaluation.explain import prune_cams, save_example_cams
from medrobust.evaluation.robustness import masking_checks
from medrobust.evaluation.store import ResultStore, StoreError, outcome_columns, stored_config_hash
from medrobust.units import IntensityMap, budget_for_case

STORE_NAME = "results.sqlite"


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    info: Any  # medrobust.models.checkpoint.CheckpointInfo
    split: Any  # medrobust.data.sources.Split


def attack_for(p: AttackSpec, eps: float, x: torch.Tensor, imap: IntensityMap) -> tuple[Any, Any]:
    """The budget and the configured attack of one grid entry at one eps (norm "dct": eps is
    VAFA's q_max and the budget carries only the valid range)."""
    from medrobust.attacks import get_attack

    if p.norm == "dct":
        budget = budget_for_case("linf", 0.0, "model", x, imap)
        return budget, get_attack(p.attack, budget, **p.options, q_max=eps)
    budget = budget_for_case(p.norm, eps, p.eps_unit, x, imap)
    return budget, get_attack(p.attack, budget, **p.options)


def run_seed(seed: int, model: str, perturbation: str, eps: float, case_id: str) -> int:
    """Deterministic 63-bit seed of one run."""
    key = f"{seed}\x1f{model}\x1f{perturbation}\x1f{eps!r}\x1f{case_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def world() -> tuple[int, int]:
    """(rank, world size): torch.distributed's if initialised, else torchrun's env, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group(backend="gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _demo_datalist(kind: str) -> Path:
    from medrobust.data import demo  # lazy: builds MNI152-based data only when asked

    root = Path(os.environ.get("MEDROBUST_CACHE", Path.home() / ".cache" / "medrobust")) / f"demo-{kind}"
    return demo.build_demo_segmentation(root) if kind == "segmentation" else demo.build_demo_classification(root)


def _load(cfg: GridConfig) -> list[LoadedModel]:
    """Load every checkpoint and its data split; errors name the config key."""
    from medrobust.data.sources import open_split
    from medrobust.models.checkpoint import load_checkpoint

    datalist = cfg.data.datalist or _demo_datalist(cfg.data.demo or "segmentation")
    splits: dict[Any, Any] = {}
    loaded = []
    for i, spec in enumerate(cfg.models):
        try:
            model, info = load_checkpoint(spec.checkpoint)
        except ValueError as err:
            raise GridConfigError(f"models[{i}].checkpoint: {err}") from None
        norm = cfg.data.normalization or (info.extra or {}).get("normalization")
        size = tuple((info.extra or {}).get("image_size") or ()) or None  # classifiers: resized as in training
        if (norm, size) not in splits:
            try:
                splits[norm, size] = open_split(datalist, cfg.data.split, normalization=norm,
                                                max_cases=cfg.data.max_cases, spatial_size=size)
            except (ValueError, IndexError) as err:
                raise GridConfigError(f"data: {datalist} split {cfg.data.split!r}: {err or 'no cases'}") from None
        split = splits[norm, size]
        if len(split.dataset) == 0:
            raise GridConfigError(f"data: {datalist} has no cases for split {cfg.data.split!r}")
        if len(split.classes) != len(info.classes) or (split.task == "classification" and split.classes != info.classes):
            raise GridConfigError(f"models[{i}]: {spec.checkpoint} predicts {len(info.classes)} classes "
                                  f"{info.classes} but {datalist} declares {len(split.classes)} {split.classes}")
        loaded.append(LoadedModel(spec.name, model, info, split))
    return loaded


def _check_attacks(cfg: GridConfig, first: dict[str, Any]) -> None:
    """Build every (attack, eps) once on the first case so bad options fail before any work."""
    x = first["image"].unsqueeze(0)
    imap = IntensityMap.from_dict(first["meta"]["intensity"])
    for i, p in enumerate(cfg.perturbations):
        for eps in p.eps if isinstance(p, AttackSpec) else []:  # corruptions: checked by the config
            try:
                attack_for(p, eps, x, imap)
            except (ValueError, TypeError) as err:
                raise GridConfigError(f"perturbations[{i}] ({p.label}, eps {eps:g} {p.eps_unit}): {err}") from None


def prepare(cfg: GridConfig) -> list[LoadedModel]:
    """Every check of the grid, before anything is written (raises GridConfigError)."""
    previous = stored_config_hash(cfg.out / STORE_NAME)
    if previous is not None and previous != cfg.config_hash:
        raise GridConfigError(f"out: results store {cfg.out / STORE_NAME} was written by a different grid config "
                              f"(hash {previous}, this config {cfg.config_hash}); choose another `out` folder")
    try:
        torch.device(cfg.device)
    except RuntimeError as err:
        raise GridConfigError(f"device: {err}; allowed: cpu, cuda, cuda:N, mps") from None
    loaded = _load(cfg)
    _check_attacks(cfg, loaded[0].split.dataset[0])
    return loaded


def _score(logits: torch.Tensor, y: torch.Tensor, classes: list[str], spacing: Any, hd: bool) -> dict[str, Any]:
    """Main score and per-class values of one prediction (B = 1)."""
    from medrobust import metrics

    if y.ndim == 1:
        probs = torch.softmax(logits.double(), dim=1)[0]
        pred = int(logits.argmax(1)[0])
        return {"score": float(pred == int(y[0])), "pred": pred, "prob": float(probs[int(y[0])]),
                "probs": probs.tolist(), "per_class": None, "hd95": None}
    dice = metrics.dice_per_class(logits, y, len(classes))[0].double()
    out = {"score": float(dice.nanmean()) if not dice.isnan().all() else 1.0, "pred": None, "prob": None, "probs": None,
           "per_class": dict(zip(classes[1:], dice.tolist())), "hd95": None}
    if hd:
        spacing = spacing[: y.ndim - 2] if spacing is not None else 1.0  # meta holds 3 values for 2D too
        out["hd95"] = dict(zip(classes[1:], metrics.hd95(logits, y, len(classes), spacing)[0].tolist()))
    return out


@dataclass
class _Case:
    """One case prepared for its runs: tensors (B = 1), clean prediction and score."""

    id: str
    item: dict[str, Any]
    x: torch.Tensor
    y: torch.Tensor
    imap: IntensityMap
    model: nn.Module
    clean_logits: torch.Tensor
    clean: dict[str, Any]
    data_range: float
    ssim_ref: Any  # medrobust.attacks.ssim.SSIMReference: x's window statistics, computed once


class _Runner:
    """The loop of one rank over its cases; holds the store and the example keeper."""

    def __init__(self, cfg: GridConfig, store: ResultStore, done: set, progress: Progress, task: Any) -> None:
        self.cfg, self.store, self.done, self.progress, self.task = cfg, store, done, progress, task
        self.device = torch.device(cfg.device)
        stored = store.to_dataframe()  # corruption runs never compete for the adversarial examples
        self.keeper = ExampleKeeper(cfg.out / EXAMPLES_DIR, cfg.examples, stored[stored["kind"] == "attack"])
        self.hd = "hd95" in cfg.metrics

    def _prepare(self, lm: LoadedModel, item: dict[str, Any]) -> _Case:
        # SSIMReference equals metrics.ssim (MONAI's SSIMMetric, to 1e-5) but filters separably:
        # MONAI's dense 11^3 window cost ~7% of a 10-step PGD per row on the demo volumes.
        from medrobust.attacks.ssim import SSIMReference
        from medrobust.models.inference import infer, windowed

        x = item["image"].unsqueeze(0).to(self.device)
        y = torch.as_tensor(item["label"]).unsqueeze(0).to(self.device)
        imap = IntensityMap.from_dict(item["meta"]["intensity"])
        model = windowed(lm.model, x, self.cfg.roi_size or lm.info.roi_size, self.cfg.overlap)
        logits = infer(model, x)
        lo, hi = budget_for_case("linf", 0.0, "model", x, imap).range_for(x)
        data_range = float((hi - lo).reshape(-1)[0])
        return _Case(str(item["id"]), item, x, y, imap, model, logits,
                     _score(logits, y, list(lm.info.classes), item["meta"].get("spacing"), self.hd), data_range,
                     SSIMReference(x, data_range) if "ssim" in self.cfg.metrics else None)

    def case(self, lm: LoadedModel, item: dict[str, Any]) -> None:
        """Run every unfinished (perturbation, eps) of one case; one store row each."""
        from medrobust.models.inference import infer

        todo = [(p, e) for p in self.cfg.perturbations for e in p.levels
                if (lm.name, p.label, float(e), str(item["id"])) not in self.done]
        self.progress.advance(self.task, sum(len(p.levels) for p in self.cfg.perturbations) - len(todo))
        if not todo:
            return
        c = self._prepare(lm, item)
        for p, eps in todo:
            if isinstance(p, CorruptionSpec):
                classes, spacing = list(lm.info.classes), c.item["meta"].get("spacing")
                self.store.add_run(run_corruption(self.cfg, lm, p, int(eps), c, lambda logits: _score(
                    logits, c.y, classes, spacing, self.hd)))
                self.progress.advance(self.task)
                continue
            t0 = time.perf_counter()
            torch.manual_seed(run_seed(self.cfg.seed, lm.name, p.label, float(eps), c.id))
            budget, attack = attack_for(p, eps, c.x, c.imap)
            t1 = time.perf_counter()
            result = attack.run(c.model, c.x, c.y)
            attack_seconds = time.perf_counter() - t1
            adv_logits = infer(c.model, result.x_adv)
            row = self._row(lm, p, float(eps), c, result, adv_logits, budget)
            row["attack_seconds"] = attack_seconds
            if self.keeper.wants(lm.name, c.id, drop_of(row)):
                self._example(row, c, result.x_adv, adv_logits, list(lm.info.classes))
            if self.cfg.save_adversarial and c.y.ndim > 1:
                save_adversarial(self.cfg.out, c.item, row, c.x, result.x_adv, c.imap)
            row["seconds"] = time.perf_counter() - t0
            self.store.add_run(row)
            self.keeper.accept(lm.name, c.id, drop_of(row), example_name(lm.name, p.label, float(eps), c.id))
            self.progress.advance(self.task)

    def _row(self, lm: LoadedModel, p: AttackSpec, eps: float, c: _Case, result: Any, adv_logits: torch.Tensor,
             budget: Any) -> dict[str, Any]:
        """The store row of one run (without timings)."""
        from medrobust import metrics

        x, y, x_adv = c.x, c.y, result.x_adv
        clean, adv = c.clean, _score(adv_logits, y, list(lm.info.classes), c.item["meta"].get("spacing"), self.hd)
        norms = {k: float(v.reshape(-1)[0]) for k, v in metrics.perturbation_norms(x, x_adv, c.imap).items()}
        history = result.loss_history
        eps_model = float(budget.eps_for(x)[0])
        with torch.no_grad():
            ssim = float(c.ssim_ref(x_adv)[0]) if c.ssim_ref is not None else None
        return {
            "config_hash": self.cfg.config_hash, "model": lm.name, "perturbation": p.label, "kind": "attack",
            "attack": p.attack, "norm": p.norm, "options_json": json.dumps(p.options, sort_keys=True),
            "eps_stated": eps, "eps_unit": p.eps_unit, "eps_model": eps_model,
            "eps_raw": float(c.imap.model_delta_to_raw(eps_model)), "case_id": c.id, "task": lm.split.task,
            "score_name": "accuracy" if y.ndim == 1 else "dice_mean", **outcome_columns(clean, adv),
            "label": int(y[0]) if y.ndim == 1 else None, **norms, "ssim": ssim,
            "psnr": float(metrics.psnr(x, x_adv, c.data_range)[0]) if "psnr" in self.cfg.metrics else None,
            "loss_initial": float(history[0, 0]) if history.numel() else None,
            "loss_best": float(result.best_loss[0]) if result.best_loss.numel() else None,
        }

    def _example(self, row: dict[str, Any], c: _Case, x_adv: torch.Tensor, adv_logits: torch.Tensor,
                 classes: list[str]) -> None:
        """Save the example slice of a run that is among its model's worst cases."""
        seg = c.y.ndim > 1
        info = {k: row[k] for k in ("model", "perturbation", "eps_stated", "eps_unit", "case_id", "task",
                                    "clean_score", "adv_score")}
        lo, hi = budget_for_case("linf", 0.0, "model", c.x, c.imap).range_for(c.x)
        info.update(classes=classes, low=float(lo.reshape(-1)[0]), high=float(hi.reshape(-1)[0]))
        save_example(self.cfg.out / EXAMPLES_DIR / example_name(row["model"], row["perturbation"], row["eps_stated"],
                                                                row["case_id"]),
                     image=c.x[0].cpu().numpy(), adversarial=x_adv[0].cpu().numpy(),
                     label=c.y[0, 0].cpu().numpy() if seg else int(c.y[0]),
                     pred_clean=c.clean_logits.argmax(1)[0].cpu().numpy() if seg else int(c.clean_logits.argmax(1)[0]),
                     pred_adv=adv_logits.argmax(1)[0].cpu().numpy() if seg else int(adv_logits.argmax(1)[0]),
                     info=info)
        if not seg:  # classifiers: Grad-CAM of the clean and the adversarial case beside the example
            save_example_cams(self.cfg.out / EXAMPLES_DIR / example_name(row["model"], row["perturbation"],
                                                                         row["eps_stated"], row["case_id"]),
                              c.model, c.x, x_adv, {**info, "label": int(c.y[0]), "pred_clean": int(
                                  c.clean_logits.argmax(1)[0]), "pred_adv": int(adv_logits.argmax(1)[0])})


def _sanity_checks(cfg: GridConfig, loaded: list[LoadedModel]) -> list[dict[str, Any]]:
    """``gradient_masking_check`` (PGD steps, Square, whole-range PGD) on each model's first case
    at the grid's largest L-inf budget."""
    from medrobust.attacks import gradient_masking_check
    from medrobust.models.inference import windowed

    linf = [p for p in cfg.perturbations if isinstance(p, AttackSpec) and p.norm == "linf"]
    if not linf:
        return []
    spec = max(linf, key=lambda p: max(p.eps))
    rows = []
    for lm in loaded:
        item = lm.split.dataset[0]
        x = item["image"].unsqueeze(0).to(cfg.device)
        y = torch.as_tensor(item["label"]).unsqueeze(0).to(cfg.device)
        budget = budget_for_case("linf", max(spec.eps), spec.eps_unit, x, IntensityMap.from_dict(item["meta"]["intensity"]))
        report = gradient_masking_check(windowed(lm.model, x, cfg.roi_size or lm.info.roi_size, cfg.overlap), x, y,
                                        budget, seed=cfg.seed)
        rows.append({"model": lm.name, "attack": f"sanity check at eps {max(spec.eps):g} {spec.eps_unit} "
                     f"(case {item['id']})", "likely_masking": report.likely_masking, "reasons": report.summary()})
    return rows


def _finish(cfg: GridConfig, loaded: list[LoadedModel], rank: int, size: int) -> None:
    """Merge rank shards (rank 0, after a barrier), then masking checks and results.csv."""
    if size > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            return
    with ResultStore(cfg.out / STORE_NAME, cfg.config_hash, cfg.model_dump_json()) as store:
        for shard in sorted(cfg.out.glob("results.rank*.sqlite")):
            store.merge(shard)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{shard}{suffix}").unlink(missing_ok=True)
        df = store.to_dataframe()
        checks = masking_checks(df) if len(df) else []
        store.write_checks(checks + (_sanity_checks(cfg, loaded) if cfg.masking_check else []))
        store.export_csv(cfg.out / "results.csv")
    run_grid_ensembles(cfg, loaded, cfg.out / STORE_NAME)  # ensemble table: clean, transfer, joint attack
    prune_cams(cfg.out / EXAMPLES_DIR)


def run_grid(config: GridConfig | str | Path, progress: bool = True) -> Path:
    """Run (or resume) a grid; returns the output folder holding results.sqlite and results.csv.

    Raises:
        GridConfigError: anything wrong with the config, checkpoints, data, attack options,
            or an existing store from another config; nothing is written then.
    """
    cfg = config if isinstance(config, GridConfig) else load_config(config)
    loaded = prepare(cfg)
    rank, size = world()
    name = STORE_NAME if size == 1 else f"results.rank{rank}.sqlite"
    try:
        store = ResultStore(cfg.out / name, cfg.config_hash, cfg.model_dump_json())
    except StoreError as err:
        raise GridConfigError(f"out: {err}") from None
    with store:
        done = store.done_keys()
        if size > 1 and (cfg.out / STORE_NAME).exists():
            with ResultStore(cfg.out / STORE_NAME) as main:
                done |= main.done_keys()
        per_case = sum(len(p.levels) for p in cfg.perturbations)
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn())
        with Progress(*cols, disable=not progress or rank != 0) as bar:
            for lm in loaded:
                lm.model.to(torch.device(cfg.device))
                first = lm.split.dataset[0]
                store.set_model(lm.name, lm.split.task, list(lm.info.classes), first["meta"]["intensity"],
                                {"architecture": lm.info.architecture, "recipe": lm.info.recipe,
                                 "checkpoint": str(lm.info.path), "normalization": lm.split.normalization})
                cases = range(rank, len(lm.split.dataset), size)
                task = bar.add_task(f"{lm.name}", total=len(cases) * per_case)
                runner = _Runner(cfg, store, done, bar, task)
                for i in cases:
                    runner.case(lm, lm.split.dataset[i])
    _finish(cfg, loaded, rank, size)
    return cfg.out
