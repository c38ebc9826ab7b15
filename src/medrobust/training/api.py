"""``train_model``: a registry network trained with a recipe on a dataset folder, in one call.

``medrobust train`` and ``medrobust tune`` parse their options and call it; examples call it
directly. Errors name the command-line flag they correspond to (``--patch-size``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from medrobust.data.sources import Split, open_split
from medrobust.models.checkpoint import CheckpointError, load_state_into, read_checkpoint_info
from medrobust.models.registry import build_model, model_spec
from medrobust.training.loop import FitResult, TrainConfig, fit, seed_everything
from medrobust.training.recipes import build_recipe
from medrobust.units import IntensityMap


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
                init: Path | None = None, progress: bool = True) -> FitResult:
    """Build the model for the dataset's shape and classes, then run the training loop.

    The train split may be cropped/padded to ``patch_size``; validation runs on whole
    volumes (through SlidingWindow when they exceed ``config.roi_size``). Classification
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

    Returns:
        The loop's result: best epoch, its validation score and the checkpoint path.

    Raises:
        ValueError: train and val classes differ, or classification images of several sizes
            without ``patch_size``; an ``init`` checkpoint that does not fit (naming
            ``--init``); bad data or recipe arguments (from the parts called).

    Example:
        >>> from medrobust.data.demo import build_demo_classification
        >>> data = build_demo_classification("demo-cls", n_train=8, n_val=4, n_test=4, size=32)  # doctest: +SKIP
        >>> result = train_model(data, "resnet18", Path("run"), model_kwargs={"widen_factor": 0.125},
        ...                      config=TrainConfig(epochs=1, device="cpu"))  # doctest: +SKIP
        >>> result.checkpoint.name  # doctest: +SKIP
        'model.json'
    """
    config = config or TrainConfig()
    train = open_split(data, "train", normalization=normalization, spatial_size=patch_size, augment=augment)
    size = patch_size if train.task == "classification" else None
    val = open_split(data, "val", normalization=normalization, spatial_size=size)
    if train.task == "classification":
        _check_classification(data, train, val)
    kwargs = {"spatial_dims": train.spatial_dims, "in_channels": train.in_channels,
              "out_channels": len(train.classes), **(model_kwargs or {})}
    # the input size the network is built for; dynunet derives nnU-Net's kernels and strides from it
    size_key = {"unetr": "img_size", "swinunetr": "img_size", "dynunet": "patch_size"}.get(model_name)
    if size_key is not None and size_key not in kwargs and "kernel_size" not in kwargs:
        kwargs[size_key] = config.roi_size or patch_size or tuple(train.dataset[0]["image"].shape[1:])
    seed_everything(config.seed)  # initial weights from the seed, not from what ran before in this process
    model = build_model(model_name, **kwargs)
    if init is not None:
        initialise_from(model, init)
    # A CT window (or no normalisation) is one map for the whole dataset; per-case z-score or
    # min-max maps differ per case, so the checkpoint records only the normalisation's name.
    fixed = train.normalization.startswith("ct:") or train.normalization == "none"
    intensity = IntensityMap.from_dict(train.dataset[0]["meta"]["intensity"]) if fixed else None
    return fit(model, build_recipe(recipe, **(recipe_params or {})), train.dataset, val.dataset, config, out,
               classes=train.classes, intensity=intensity,
               extra={"normalization": train.normalization, **({"image_size": list(size)} if size else {}),
                      **({"init": str(init)} if init is not None else {})},
               progress=progress)
