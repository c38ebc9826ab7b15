"""The evaluation grid runner: models x perturbations x budgets x cases -> results.sqlite.

``run_grid(config)`` first checks everything that can be checked (checkpoints load, the
split has cases whose classes fit each model, every attack builds with its options and
budgets, an existing store was written by this very config from the same data files, as
``provenance.json`` records them) and writes nothing when any
check fails. It then loops model -> case -> perturbation -> level (so each case is loaded
and its clean prediction computed once per model), skips runs already in the store, and
evaluates each remaining run with the evaluation core (:func:`~medrobust.evaluation.core.evaluate_run`:
attacks at an eps, corruptions at a severity), writing one row per run in its own
transaction. An ensemble classifier also gets its clean, transfer and joint rows
(:func:`~medrobust.evaluation.ensembles.run_ensemble_case`). Every run is seeded from
``(seed, model, perturbation, eps, case)``, so a resumed grid gives the same numbers as an
uninterrupted one.

Under ``torchrun`` (WORLD_SIZE > 1) cases are sharded by rank; each rank evaluates on its
own device (``device: cuda`` or ``auto`` means ``cuda:LOCAL_RANK``; the process group is NCCL
on CUDA, gloo otherwise), writes its own ``results.rank{r}.sqlite``, and rank 0 merges them
after a barrier (no pickling between ranks). Rank 0 then writes the gradient-masking checks
and ``results.csv``. The report is written by the caller (``medrobust.report.write_report``):
evaluation never imports report.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medrobust.evaluation.cases import prepare_cases, valid_range
from medrobust.evaluation.config import GridConfig, GridConfigError, load_config
from medrobust.evaluation.core import PerturbationSpec, attack_for, check_fits, evaluate_run
from medrobust.evaluation.ensembles import is_ensemble_classifier, run_ensemble_case
from medrobust.evaluation.examples import (
    EXAMPLES_DIR,
    ExampleKeeper,
    adversarial_folder,
    drop_of,
    example_name,
    save_adversarial,
    save_example,
)
from medrobust.evaluation.explain import prune_cams, save_example_cams
from medrobust.evaluation.input_record import changed_inputs, record_inputs
from medrobust.evaluation.loading import SplitKey, class_mismatch, load_spec, split_key
from medrobust.evaluation.robustness import masking_checks
from medrobust.evaluation.specs import AttackSpec, CorruptionSpec
from medrobust.evaluation.store import ResultStore, StoreError, stored_config_hash
from medrobust.evaluation.thumbnails import save_thumbnail, thumbnail_path
from medrobust.evaluation.types import Case, LoadedModel, Row, RunSettings
from medrobust.models.devices import check_device, process_group_backend, resolve_device
from medrobust.units import IntensityMap, budget_for_case

STORE_NAME = "results.sqlite"


def world(device: torch.device | None = None) -> tuple[int, int]:
    """This process's place among the evaluation's processes.

    Args:
        device: the device this rank evaluates on (default the CPU): under torchrun the group
            it joins uses NCCL for a CUDA device, gloo otherwise (as training does).

    Returns:
        (rank, world size): torch.distributed's if initialised, else torchrun's environment
        (initialising the process group), else (0, 1).

    Example:
        >>> world()
        (0, 1)
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group(backend=process_group_backend(device or torch.device("cpu")))
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _demo_datalist(kind: str) -> Path:
    from medrobust.data import demo  # lazy: builds MNI152-based data only when asked

    root = Path(os.environ.get("MEDROBUST_CACHE", Path.home() / ".cache" / "medrobust")) / f"demo-{kind}"
    return demo.build_demo_segmentation(root) if kind == "segmentation" else demo.build_demo_classification(root)


def _load(cfg: GridConfig) -> list[LoadedModel]:
    """Load every checkpoint and its data split; errors name the config key."""
    from medrobust.data.sources import Split, open_split

    datalist = cfg.data.datalist or _demo_datalist(cfg.data.demo or "segmentation")
    splits: dict[SplitKey, Split] = {}
    loaded = []
    for i, spec in enumerate(cfg.models):
        try:
            source = load_spec(spec)
        except ValueError as err:
            raise GridConfigError(f"models[{i}].{spec.source[0]}: {err}") from None
        model, info = source.network, source.info
        key = split_key(info, cfg.data.normalization)
        if key not in splits:
            try:
                splits[key] = open_split(datalist, cfg.data.split, normalization=key[0], max_cases=cfg.data.max_cases,
                                         spatial_size=key[1], spacing=key[2])
            except (ValueError, IndexError) as err:
                raise GridConfigError(f"data: {datalist} split {cfg.data.split!r}: {err or 'no cases'}") from None
        split = splits[key]
        if len(split.dataset) == 0:
            raise GridConfigError(f"data: {datalist} has no cases for split {cfg.data.split!r}")
        problem = class_mismatch(info, split)
        if problem:
            raise GridConfigError(f"models[{i}]: {spec.source[1]}: {problem} ({datalist})")
        loaded.append(LoadedModel(spec.name, model, info, split))
    return loaded


def _check_tasks(cfg: GridConfig, lm: LoadedModel) -> None:
    """Fail on an attack or a target that does not fit the model's task or classes."""
    for i, p in enumerate(cfg.perturbations):
        if not isinstance(p, AttackSpec):
            continue
        try:
            check_fits(p, lm)
        except ValueError as err:
            raise GridConfigError(f"perturbations[{i}].{err} (model {lm.name!r})") from None


def _check_attacks(cfg: GridConfig, first: dict[str, Any]) -> None:
    """Build every (attack, eps) once on the first case so bad options fail before any work."""
    x = first["image"].unsqueeze(0)
    imap = IntensityMap.from_dict(first["meta"]["intensity"])
    for i, p in enumerate(cfg.perturbations):
        if not isinstance(p, AttackSpec):
            continue  # corruptions: checked by the config
        for eps in p.eps:
            try:
                attack_for(p, eps, x, imap)
            except (ValueError, TypeError) as err:
                raise GridConfigError(f"perturbations[{i}] ({p.label}, eps {eps:g} {p.eps_unit}): {err}") from None


def prepare(cfg: GridConfig) -> list[LoadedModel]:
    """Every check of the grid, before anything is written.

    Args:
        cfg: the validated grid.

    Returns:
        The loaded models with their splits, in the grid's order.

    Raises:
        GridConfigError: another grid's store in ``out``, or data files changed since this
            grid's store was written (named), a bad or absent device, a checkpoint or data
            that cannot be read or do not fit, an attack that does not build (named by key).
    """
    previous = stored_config_hash(cfg.out / STORE_NAME)
    if previous is not None and previous != cfg.config_hash:
        raise GridConfigError(f"out: results store {cfg.out / STORE_NAME} was written by a different grid config "
                              f"(hash {previous}, this config {cfg.config_hash}); choose another `out` folder")
    try:
        check_device(cfg.device, "device")  # a device name, and CUDA/MPS really present
    except ValueError as err:
        raise GridConfigError(str(err)) from None
    loaded = _load(cfg)
    changed = changed_inputs(cfg.out, loaded) if previous is not None else []
    if changed:
        raise GridConfigError(f"data: {'; '.join(changed)} since {cfg.out / STORE_NAME} was written; restore "
                              "the data or choose another `out` folder")
    _check_attacks(cfg, loaded[0].split.dataset[0])
    for lm in loaded:
        _check_tasks(cfg, lm)
    return loaded


class _Runner:
    """The loop of one rank over its cases; holds the store and the example keeper."""

    def __init__(self, cfg: GridConfig, store: ResultStore, done: set[tuple[str, str, float, str]],
                 progress: Progress, task: TaskID, device: torch.device) -> None:
        self.cfg, self.store, self.done, self.progress, self.task = cfg, store, done, progress, task
        self.device = device
        self.settings = RunSettings(cfg.seed, cfg.config_hash, frozenset(cfg.metrics), cfg.include_background,
                                    cfg.nsd_tolerance_mm, cfg.per_channel_ranges)
        stored = store.to_dataframe()  # corruption runs never compete for the adversarial examples
        self.keeper = ExampleKeeper(cfg.out / EXAMPLES_DIR, cfg.examples, stored[stored["kind"] == "attack"])
        self.first_case: dict[str, str] = {}

    def _todo(self, lm: LoadedModel, case_id: str) -> list[tuple[PerturbationSpec, float]]:
        """The (perturbation, eps) of a case without a stored row."""
        return [(p, e) for p in self.cfg.perturbations for e in p.levels
                if (lm.name, p.label, float(e), case_id) not in self.done]

    def _pending(self, lm: LoadedModel, items: Iterable[dict[str, Any]], ensemble: bool) -> Iterator[dict[str, Any]]:
        """The items with work left (the others count as done on the progress bar)."""
        for item in items:
            todo = self._todo(lm, str(item["id"]))
            self.progress.advance(self.task, sum(len(p.levels) for p in self.cfg.perturbations) - len(todo))
            if todo or ensemble:
                yield item

    def cases(self, lm: LoadedModel, items: Iterable[dict[str, Any]]) -> None:
        """Run every unfinished (perturbation, eps) of each case; one store row each.

        Cases of equal shape are prepared ``batch_size`` at a time (one clean forward pass);
        each run is then the case's own, so the rows do not depend on the batch size.
        """
        ensemble = is_ensemble_classifier(lm)
        for c in prepare_cases(lm, self._pending(lm, items, ensemble), self.settings, device=self.device,
                               roi_size=self.cfg.roi_size, overlap=self.cfg.overlap,
                               sw_batch_size=self.cfg.sw_batch_size, batch_size=self.cfg.batch_size):
            self._case(lm, c, ensemble)

    def _case(self, lm: LoadedModel, c: Case, ensemble: bool) -> None:
        """Run every unfinished (perturbation, eps) of one prepared case; one store row each."""
        for p, level in self._todo(lm, c.id):
            run = evaluate_run(lm, p, level, c, self.settings)
            if isinstance(p, CorruptionSpec):
                self._thumbnail(lm, c, run.row, run.x, run.perturbed.params or {})
            elif isinstance(p, AttackSpec):
                self._keep(lm, c, run.row, run.x, run.logits)
            self.store.add_run(run.row)
            if isinstance(p, AttackSpec):
                self.keeper.accept(lm.name, c.id, drop_of(run.row.as_dict()), example_name(
                    lm.name, p.label, float(level), c.id))
            self.progress.advance(self.task)
        if ensemble:  # clean, transfer and joint settings of an ensemble classifier
            run_ensemble_case(lm, c, [p for p in self.cfg.perturbations if isinstance(p, AttackSpec)],
                              self.settings, self.store)

    def _keep(self, lm: LoadedModel, c: Case, row: Row, x_adv: torch.Tensor, adv_logits: torch.Tensor) -> None:
        """Files of an attack run: its example slice (when among the worst) and its NIfTI."""
        drop = drop_of(row.as_dict())
        if self.keeper.wants(lm.name, c.id, drop):
            self._example(row, c, x_adv, adv_logits, lm.classes)
        if self.cfg.save_adversarial:
            save_adversarial(adversarial_folder(self.cfg.out, row), c, row, x_adv)

    def _thumbnail(self, lm: LoadedModel, c: Case, row: Row, x_c: torch.Tensor, params: dict[str, Any]) -> None:
        """The corruption thumbnail of the split's first case (the first model's stays)."""
        path = thumbnail_path(self.cfg.out, row.perturbation, int(row.eps_stated))
        if c.id == str(lm.split.dataset[0]["id"]) and not path.exists():
            save_thumbnail(path, c, x_c, row, params)

    def _example(self, row: Row, c: Case, x_adv: torch.Tensor, adv_logits: torch.Tensor, classes: list[str]) -> None:
        """Save the example slice of a run that is among its model's worst cases."""
        seg = c.segmentation
        info: dict[str, Any] = {k: getattr(row, k) for k in ("model", "perturbation", "eps_stated", "eps_unit",
                                                             "case_id", "task", "clean_score", "adv_score")}
        low, high = valid_range(c.x, c.imap)
        info.update(classes=classes, low=low, high=high)
        path = self.cfg.out / EXAMPLES_DIR / example_name(row.model, row.perturbation, row.eps_stated, row.case_id)
        pred_clean, pred_adv = c.clean_logits.argmax(1)[0], adv_logits.argmax(1)[0]
        save_example(path, image=c.x[0].cpu().numpy(), adversarial=x_adv[0].cpu().numpy(),
                     label=c.y[0, 0].cpu().numpy() if seg else int(c.y[0]),
                     pred_clean=pred_clean.cpu().numpy() if seg else int(pred_clean),
                     pred_adv=pred_adv.cpu().numpy() if seg else int(pred_adv), info=info)
        if not seg:  # classifiers: Grad-CAM of the clean and the adversarial case beside the example
            save_example_cams(path, c.model, c.x, x_adv, {**info, "label": int(c.y[0]), "pred_clean": int(pred_clean),
                                                          "pred_adv": int(pred_adv)})


def _sanity_checks(cfg: GridConfig, loaded: list[LoadedModel], device: torch.device) -> list[dict[str, Any]]:
    """``gradient_masking_check`` (PGD steps, Square, whole-range PGD) on each model's first case.

    At the grid's largest L-inf budget.
    """
    from medrobust.attacks import gradient_masking_check
    from medrobust.models.inference import windowed

    linf = [p for p in cfg.perturbations if isinstance(p, AttackSpec) and p.norm == "linf"]
    if not linf:
        return []
    spec = max(linf, key=lambda p: max(p.eps))
    rows = []
    for lm in loaded:
        item = lm.split.dataset[0]
        x = item["image"].unsqueeze(0).to(device)
        y = torch.as_tensor(item["label"]).unsqueeze(0).to(device)
        budget = budget_for_case("linf", max(spec.eps), spec.eps_unit, x, IntensityMap.from_dict(item["meta"]["intensity"]))
        model = windowed(lm.model, x, cfg.roi_size or lm.info.roi_size, cfg.overlap, cfg.sw_batch_size)
        report = gradient_masking_check(model, x, y, budget, seed=cfg.seed)
        rows.append({"model": lm.name, "attack": f"sanity check at eps {max(spec.eps):g} {spec.eps_unit} "
                     f"(case {item['id']})", "likely_masking": report.likely_masking, "reasons": report.summary()})
    return rows


def _finish(cfg: GridConfig, loaded: list[LoadedModel], rank: int, size: int, device: torch.device) -> None:
    """Merge rank shards (rank 0, after a barrier), then masking checks and results.csv."""
    if size > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            return
    with ResultStore(cfg.out / STORE_NAME, cfg.config_hash, cfg.model_dump_json()) as store:
        for shard in sorted(cfg.out.glob("results.rank*.sqlite")):  # runs, models and ensemble rows
            store.merge(shard)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{shard}{suffix}").unlink(missing_ok=True)
        df = store.to_dataframe()
        checks = masking_checks(df) if len(df) else []
        store.write_checks(checks + (_sanity_checks(cfg, loaded, device) if cfg.masking_check else []))
        store.export_csv(cfg.out / "results.csv")
    prune_cams(cfg.out / EXAMPLES_DIR)


def run_grid(config: GridConfig | str | Path, progress: bool = True) -> Path:
    """Run (or resume) a grid; returns the output folder holding results.sqlite and results.csv.

    Args:
        config: a :class:`GridConfig` or the path of its YAML file.
        progress: show a progress bar (rank 0 only).

    Returns:
        The grid's ``out`` folder.

    Raises:
        GridConfigError: anything wrong with the config, checkpoints, data, attack options,
            or an existing store from another config; nothing is written then.
    """
    cfg = config if isinstance(config, GridConfig) else load_config(config)
    loaded = prepare(cfg)
    device = resolve_device(cfg.device)  # under torchrun a bare cuda or auto is cuda:LOCAL_RANK
    rank, size = world(device)
    name = STORE_NAME if size == 1 else f"results.rank{rank}.sqlite"
    try:
        store = ResultStore(cfg.out / name, cfg.config_hash, cfg.model_dump_json())
    except StoreError as err:
        raise GridConfigError(f"out: {err}") from None
    with store:
        if rank == 0:
            record_inputs(cfg.out, loaded)  # the data files' stamps, checked when this grid resumes
        done = store.done_keys()
        if size > 1 and (cfg.out / STORE_NAME).exists():
            with ResultStore(cfg.out / STORE_NAME) as main:
                done |= main.done_keys()
        per_case = sum(len(p.levels) for p in cfg.perturbations)
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn())
        with Progress(*cols, disable=not progress or rank != 0) as bar:
            for lm in loaded:
                lm.model.to(device)
                first = lm.split.dataset[0]
                store.set_model(lm.name, lm.split.task, list(lm.info.classes), first["meta"]["intensity"],
                                {"architecture": lm.info.architecture, "recipe": lm.info.recipe,
                                 "checkpoint": str(lm.info.path), "normalization": lm.split.normalization,
                                 "spacing": lm.info.extra.get("spacing"), "notes": lm.info.extra.get("notes") or []})
                cases = range(rank, len(lm.split.dataset), size)
                task = bar.add_task(escape(lm.name), total=len(cases) * per_case)  # a name is not markup
                runner = _Runner(cfg, store, done, bar, task, device)
                runner.cases(lm, (lm.split.dataset[i] for i in cases))
    _finish(cfg, loaded, rank, size, device)
    return cfg.out
