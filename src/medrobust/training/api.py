"""``train_model``: a registry network trained with a recipe on a dataset folder, in one call.

``medrobust train`` and ``medrobust tune`` parse their options and call it; examples call it
directly. Errors name the command-line flag they correspond to (``--patch-size``).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from medrobust.data.provenance import (
    PROVENANCE_NAME,
    Provenance,
    differences,
    item_files,
    read_provenance,
    stamp_files,
    write_provenance,
)
from medrobust.data.sources import Split, open_split
from medrobust.data.transforms import make_dataset
from medrobust.models.checkpoint import CheckpointError, load_state_into, read_checkpoint_info
from medrobust.models.devices import check_amp, check_device
from medrobust.models.registry import build_model, model_spec, network_stride
from medrobust.tracking import open_tracker
from medrobust.training.loop import FitResult, TrainConfig, fit, seed_everything
from medrobust.training.recipes import build_recipe
from medrobust.training.sizes import choose_sizes
from medrobust.units import IntensityMap

# TrainConfig fields that never change the numbers: not compared on resume.
_NOT_COMPARED = {"resume", "device", "num_workers"}


def _check_classification(data: Path, train: Split, val: Split) -> None:
    """Train and val must name the same classes; images of several sizes need a stated size."""
    if val.classes != train.classes:
        raise ValueError(f"{data}: the train split has classes {train.classes} but the val split has {val.classes}")
    count = len(train.dataset)
    shapes = sorted({tuple(train.dataset[i]["image"].shape[1:]) for i in range(count)})
    if len(shapes) > 1:
        listed = ", ".join("x".join(map(str, s)) for s in shapes[:4]) + (" ..." if len(shapes) > 4 else "")
        raise ValueError(f"--patch-size: {data} holds images of {len(shapes)} sizes ({listed}); state the size "
                         "to resize them to, e.g. --patch-size 64,64")


def _cases(split: Split) -> list[tuple[str, int, tuple[int, ...]]]:
    """(image file, channels, spatial shape) of every case of a split."""
    cases = []
    for i in range(len(split.dataset)):
        item = split.dataset[i]
        source = item["meta"]["source"]
        cases.append((str(source if isinstance(source, (str, Path)) else source[0]), int(item["image"].shape[0]),
                      tuple(int(n) for n in item["image"].shape[1:])))
    return cases


def _check_channels(cases: list[tuple[str, int, tuple[int, ...]]], init: Path | None) -> None:
    """Every image has the first one's channels, and so has the ``init`` checkpoint's network."""
    first, channels, _ = cases[0]
    for path, count, _ in cases:
        if count != channels:
            raise ValueError(f"{path}: image has {count} channel(s) but {first} has {channels}; the model takes one "
                             "channel count, every image of the dataset needs it")
    if init is not None:
        try:
            info = read_checkpoint_info(init)
        except CheckpointError as err:
            raise ValueError(f"--init: {err}") from None
        wanted = info.kwargs.get("in_channels")
        if wanted is not None and wanted != channels:
            raise ValueError(f"--init: {info.path} takes {wanted}-channel images but {first} has {channels} channel(s)")


def _inputs(data: Path, splits: list[Split], init: Path | None) -> list[str]:
    """Files a run reads: the datalist, every case's images and labels, the ``init`` checkpoint's files."""
    files = [str(data)] if data.is_file() else []
    for split in splits:
        files += item_files(split.dataset.items)
    if init is not None:
        info = read_checkpoint_info(init)
        files += [str(info.path), str(info.weights_path)]
    return files


def _start_run(out: Path, settings: dict[str, Any], inputs: list[str], config: TrainConfig, restart: bool,
               resume_anyway: bool) -> None:
    """Record the run's settings and input stamps in ``out``; refuse a resume whose inputs or flags changed.

    A run that starts over (``restart`` or no resume) first removes the previous run's resume
    state (``last/``), so a later resume never pairs an old state with new inputs.
    """
    main_rank = int(os.environ.get("RANK", "0")) == 0
    path = out / PROVENANCE_NAME
    resuming = config.resume and not restart and (out / "last" / "state.json").exists()
    recorded = read_provenance(path) if resuming else None
    current = Provenance(settings, stamp_files(inputs, recorded))
    if recorded is not None and not resume_anyway:
        changed = differences(recorded, current)
        if changed:
            raise ValueError(f"--out: {out} holds a run started with other inputs or flags ({'; '.join(changed)}); "
                             "pass --restart to start it over, --resume-anyway to continue it with these, "
                             "or choose another --out")
    if not main_rank:
        return
    if not resuming:
        shutil.rmtree(out / "last", ignore_errors=True)  # a previous run's state is never resumed with these inputs
    out.mkdir(parents=True, exist_ok=True)
    write_provenance(path, current)


def initialise_from(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's weights into a freshly built ``model`` (``--init``).

    Args:
        model: built by the registry; its architecture name must equal the checkpoint's and
            every weight must fit (names and shapes).
        checkpoint: ``model.json`` or the folder holding it.

    Raises:
        ValueError: naming ``--init``: an unreadable checkpoint, another architecture, or
            weights that do not fit (missing, unexpected or differently shaped keys listed).
    """
    try:
        info = read_checkpoint_info(checkpoint)
        architecture = model_spec(model)["architecture"]
        if info.architecture != architecture:
            raise CheckpointError(f"{info.path}: checkpoint architecture is {info.architecture!r}, "
                                  f"this run trains {architecture!r}")
        load_state_into(model, info.weights_path)
    except CheckpointError as err:
        raise ValueError(f"--init: {err}") from None


def train_model(data: Path, model_name: str, out: Path, *, recipe: str = "standard",
                recipe_params: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None,
                config: TrainConfig | None = None, normalization: str | None = None,
                patch_size: tuple[int, ...] | None = None, augment: bool = False,
                init: Path | None = None, progress: bool = True, restart: bool = False,
                resume_anyway: bool = False, log: Callable[[str], None] | None = None,
                tracking: str = "none") -> FitResult:
    """Build the model for the dataset's shape and classes, then run the training loop.

    The train split may be cropped/padded to ``patch_size``; validation runs on whole
    volumes (through SlidingWindow when they exceed ``config.roi_size``). When neither size
    is given and the volumes do not suit the network as they are (sides the network's stride
    does not divide, several shapes, too large), both are chosen from the data
    (:func:`~medrobust.training.sizes.choose_sizes`) and stored in ``model.json``
    (``roi_size``, ``extra.patch_size``). ``out/provenance.json`` records the settings and
    the content of every input file; resuming with other ones is refused, naming them. Classification
    images of every split are resized to ``patch_size`` (recorded as ``extra["image_size"]``).
    The initial weights come from ``config.seed``, whatever ran before in the process, or
    from the checkpoint ``init`` (fine-tuning, as VAFT's ``--use_pretrained`` and SEAT's
    ``--ft --pretrained``): same architecture and weight shapes, a fresh optimizer and
    schedule. A run that resumes from ``out/last`` continues from its own state instead.

    Args:
        data: Decathlon ``dataset.json``, class-folder root or CSV with train and val splits.
        model_name: registry name (``unet``, ``resnet18``, ...); ``spatial_dims``,
            ``in_channels`` and ``out_channels`` follow from the data.
        out: run folder: ``model.json`` + ``model.safetensors`` (best on validation),
            ``last/`` (resume state), ``history.csv``.
        recipe: training recipe name (see ``RECIPES``).
        recipe_params: keyword arguments of the recipe.
        model_kwargs: extra network keyword arguments (override the data-derived ones).
        config: loop settings (epochs, optimiser, selection, device); default ``TrainConfig()``.
        normalization: ``zscore``, ``minmax``, ``none`` or ``ct:LOW,HIGH``; None: the
            dataset's default.
        patch_size: crop/pad size of training cases (segmentation) or resize size of every
            split (classification).
        augment: random flips, affine and intensity jitter on the train split.
        init: a checkpoint (``model.json`` or its folder) whose weights start the training;
            recorded as ``extra["init"]``.
        progress: show the progress bar.
        restart: start over even when ``out`` holds a run to resume (its ``last/`` is removed).
        resume_anyway: resume even when the inputs or settings differ from those ``out``
            recorded (the new ones are recorded).
        log: called with a line saying which patch/ROI was chosen from the data, if any.
        tracking: ``none``, ``tensorboard`` (event files in ``out/tensorboard``) or ``mlflow``:
            each epoch's row of ``history.csv`` is logged there too.

    Returns:
        The loop's result: best epoch, its validation score and the checkpoint path.

    Raises:
        ValueError: train and val classes differ, or classification images of several sizes
            without ``patch_size``; images whose channel counts differ (naming the file); an
            ``init`` checkpoint that does not fit (naming ``--init``); a size the network
            cannot take (naming ``--roi-size``/``--patch-size``); a resume whose inputs or
            settings changed (naming each); a device or ``amp`` this machine lacks; bad data
            or recipe arguments (from the parts called).

    Example:
        >>> from medrobust.data.demo import build_demo_classification
        >>> data = build_demo_classification("demo-cls", n_train=8, n_val=4, n_test=4, size=32)  # doctest: +SKIP
        >>> result = train_model(data, "resnet18", Path("run"), model_kwargs={"widen_factor": 0.125},
        ...                      config=TrainConfig(epochs=1, device="cpu"))  # doctest: +SKIP
        >>> result.checkpoint.name  # doctest: +SKIP
        'model.json'
    """
    if restart and resume_anyway:
        raise ValueError("--restart: starts the run over, --resume-anyway continues it; give one of them")
    config = config or TrainConfig()
    check_device(config.device, "--device")
    check_amp(config.amp, config.device, "--amp")
    choice = None
    train = open_split(data, "train", normalization=normalization, spatial_size=patch_size, augment=augment)
    size = patch_size if train.task == "classification" else None
    val = open_split(data, "val", normalization=normalization, spatial_size=size)
    train_cases, val_cases = _cases(train), _cases(val)
    _check_channels(train_cases + val_cases, init)
    if train.task == "classification":
        _check_classification(data, train, val)
    kwargs = {"spatial_dims": train.spatial_dims, "in_channels": train.in_channels,
              "out_channels": len(train.classes), **(model_kwargs or {})}
    settings = {"--data": str(data.resolve()), "--model": model_name, "--recipe": recipe, "--params": recipe_params or {},
                "--model-kwargs": model_kwargs or {}, "--normalization": normalization, "--patch-size": patch_size,
                "--augment": augment, "--init": str(init.resolve()) if init is not None else None,
                **{f"--{k.replace('_', '-')}": v for k, v in config.model_dump(mode="json").items()
                   if k not in _NOT_COMPARED}}
    if train.task == "segmentation":
        choice = choose_sizes({p: s for p, _, s in train_cases}, {p: s for p, _, s in val_cases},
                              network_stride(model_name, train.spatial_dims, kwargs), config.roi_size, patch_size)
        if choice.chosen and log is not None:
            log(f"patch and ROI {'x'.join(map(str, choice.roi_size or ()))} {choice.reason}; "
                "--patch-size and --roi-size override them")
        if choice.patch_size != patch_size:  # training cases padded/cropped to the chosen patch
            train = Split(make_dataset(train.dataset.items, normalization=train.normalization,
                                       spatial_size=choice.patch_size, num_classes=len(train.classes),
                                       augment=augment), train.classes, train.task, train.spatial_dims,
                          train.in_channels, train.source, train.normalization)
        config = config.model_copy(update={"roi_size": choice.roi_size})
    # the input size the network is built for; dynunet derives nnU-Net's kernels and strides from it
    size_key = {"unetr": "img_size", "swinunetr": "img_size", "dynunet": "patch_size"}.get(model_name)
    if size_key is not None and size_key not in kwargs and "kernel_size" not in kwargs:
        kwargs[size_key] = config.roi_size or patch_size or tuple(train.dataset[0]["image"].shape[1:])
    seed_everything(config.seed)  # initial weights from the seed, not from what ran before in this process
    model = build_model(model_name, **kwargs)
    if init is not None:
        initialise_from(model, init)
    recipe_obj = build_recipe(recipe, **(recipe_params or {}))
    _start_run(out, settings, _inputs(data, [train, val], init), config, restart, resume_anyway)  # all checks passed
    if restart:  # every rank starts over, also one that looks before rank 0 removed last/
        config = config.model_copy(update={"resume": False})
    # A CT window (or no normalisation) is one map for the whole dataset; per-case z-score or
    # min-max maps differ per case, so the checkpoint records only the normalisation's name.
    fixed = train.normalization.startswith("ct:") or train.normalization == "none"
    intensity = IntensityMap.from_dict(train.dataset[0]["meta"]["intensity"]) if fixed else None
    extra: dict[str, Any] = {"normalization": train.normalization, **({"image_size": list(size)} if size else {}),
                             **({"init": str(init)} if init is not None else {})}
    if choice is not None:
        extra.update(patch_size=list(choice.patch_size) if choice.patch_size else None, size_choice=choice.reason)
    tracker = open_tracker(tracking, out / "tensorboard")
    try:
        return fit(model, recipe_obj, train.dataset, val.dataset, config, out,
                   classes=train.classes, intensity=intensity, extra=extra, progress=progress, tracker=tracker)
    finally:
        tracker.close()
