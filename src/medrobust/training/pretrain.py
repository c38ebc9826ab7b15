"""``pretrain_natural``: a small natural-image backbone, offline and cached.

Domain assimilation (seed 004) starts from a backbone pretrained on natural photographs.
Nothing is downloaded here: the colour photographs bundled with scikit-image
(``skimage.data``: astronaut, coffee, chelsea, rocket, motorcycle, hubble deep field) are
the "natural domain". The self-made task classifies random patches by the photograph they
come from and by their rotation (0/90/180/270 degrees; task "both", the default), or by one
of the two. Photographs are resized so their shorter side is 4 patches, horizontal flips
augment. The default backbone is small: a resnet is built with ``widen_factor=0.25``
(16..128 channels, 0.7 M weights) unless ``backbone_kwargs`` says otherwise ({} for the
full width). The result is a registry checkpoint (``model.json`` + ``model.safetensors``,
input RGB in [0, 1]) that ``build_model("assimilation", ..., backbone_weights=PATH)`` or
:func:`~medrobust.models.pretrained.load_pretrained` reads. A folder that already holds a
checkpoint made with the same configuration is reused. ``medrobust pretrain-natural``
parses its options and calls :func:`pretrain_natural`; errors name its flags.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from skimage import data as skdata

from medrobust.models.checkpoint import HEADER_NAME, CheckpointError, read_checkpoint_info, save_checkpoint
from medrobust.models.devices import resolve_device
from medrobust.models.pretrained import head_prefix
from medrobust.models.registry import build_model
from medrobust.units import IntensityMap

console = Console()

PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": skdata.astronaut, "coffee": skdata.coffee, "chelsea": skdata.chelsea, "rocket": skdata.rocket,
    "motorcycle": lambda: skdata.stereo_motorcycle()[0], "hubble": skdata.hubble_deep_field,
}
TASKS = ("both", "photo", "rotation")
RECIPE = "pretrain-natural"
EVAL_PATCHES = 256
SMALL_RESNET = {"widen_factor": 0.25}


def load_photos(short_side: int) -> list[torch.Tensor]:
    """The bundled photographs, resized so their shorter side is ``short_side`` pixels.

    Args:
        short_side: length in pixels of each photograph's shorter side after resizing.

    Returns:
        One tensor per entry of ``PHOTOS``, in its order.

    Shape:
        Each photograph: ``(3, H, W)`` float32 in [0, 1] with ``min(H, W) == short_side``.

    Raises:
        ValueError: a photograph is not bundled with the installed scikit-image.

    Example:
        >>> photos = load_photos(16)
        >>> len(photos) == len(PHOTOS), all(p.shape[0] == 3 and min(p.shape[1:]) == 16 for p in photos)
        (True, True)
    """
    photos = []
    for name, read in PHOTOS.items():
        try:
            rgb = read()
        except (ModuleNotFoundError, OSError, ValueError) as err:  # skimage wants pooch for non-bundled files
            raise ValueError(f"skimage.data photograph {name!r} is not available offline ({err})") from err
        img = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float()[None] / 255.0
        scale = short_side / min(img.shape[-2:])
        size = (max(short_side, round(img.shape[-2] * scale)), max(short_side, round(img.shape[-1] * scale)))
        photos.append(F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
                      .clamp(0, 1))
    return photos


def class_names(task: str) -> list[str]:
    """Names of the pretext classes, in label order; label = photo·4 + rotation for "both".

    Args:
        task: "both", "photo" or "rotation".

    Returns:
        One name per class: the photograph, the rotation, or "photo/rotation".

    Example:
        >>> class_names("rotation")
        ['rot0', 'rot90', 'rot180', 'rot270']
        >>> class_names("both")[:2], len(class_names("both")) == 4 * len(PHOTOS)
        (['astronaut/rot0', 'astronaut/rot90'], True)
    """
    rotations = [f"rot{90 * k}" for k in range(4)]
    if task == "photo":
        return list(PHOTOS)
    if task == "rotation":
        return rotations
    return [f"{p}/{r}" for p in PHOTOS for r in rotations]


def sample_patches(photos: list[torch.Tensor], n: int, patch: int, task: str,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random patches of the photographs, flipped and rotated at random, with their labels.

    Args:
        photos: photographs from :func:`load_photos`, each at least ``patch`` pixels a side.
        n: number of patches.
        patch: side of a square patch in pixels.
        task: "both" (label photo·4 + rotation), "photo" or "rotation".
        gen: random generator; the same seed gives the same photographs, places, flips and
            rotations whatever the task.

    Returns:
        The patches and their labels (indices into :func:`class_names` of ``task``).

    Shape:
        Patches ``(n, 3, patch, patch)`` float32; labels ``(n,)`` int64.

    Example:
        >>> photos = load_photos(16)
        >>> x, y = sample_patches(photos, 4, 8, "both", torch.Generator().manual_seed(0))
        >>> tuple(x.shape), bool(y.max() < len(class_names("both")))
        ((4, 3, 8, 8), True)
    """
    which = torch.randint(len(photos), (n,), generator=gen)
    turns = torch.randint(4, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    out = []
    for p, k, flip in zip(which.tolist(), turns.tolist(), flips.tolist()):
        img = photos[p]
        top = int(torch.randint(img.shape[1] - patch + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - patch + 1, (1,), generator=gen))
        crop = img[:, top:top + patch, left:left + patch]
        out.append(torch.rot90(crop.flip(-1) if flip else crop, k, dims=(1, 2)))
    labels = {"photo": which, "rotation": turns, "both": which * 4 + turns}[task]
    return torch.stack(out), labels


def _is_cached(out: Path, config: dict[str, Any]) -> bool:
    header = out / HEADER_NAME
    if not header.exists():
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"--out {out}: folder exists, is not empty and holds no checkpoint; choose another")
        return False
    try:
        info = read_checkpoint_info(header)
    except CheckpointError as err:
        raise ValueError(f"--out {out}: holds an unreadable checkpoint ({err}); choose another folder") from err
    if info.recipe != RECIPE:
        raise ValueError(f"--out {out}: holds a {info.recipe!r} checkpoint, not a pretrain-natural one; choose another")
    return info.extra.get("pretrain_config") == config and info.weights_path.exists()


def pretrain_natural(out: str | Path, *, backbone: str = "resnet18", backbone_kwargs: dict[str, Any] | None = None,
                     patch_size: int = 32, steps: int = 200, batch_size: int = 32, lr: float = 2e-3,
                     task: str = "both", seed: int = 0, device: str = "auto", progress: bool = True) -> Path:
    """Pretrain ``backbone`` (2D, 3 input channels) on the pretext task; return ``out/model.json``.

    Cached: returns at once when ``out`` holds a checkpoint of the same configuration. The
    checkpoint records the configuration, the accuracy on 256 fresh patches, chance level
    and the training time in ``extra``.

    Args:
        out: folder for ``model.json`` + ``model.safetensors``.
        backbone: registry classifier: resnet18/34/50, densenet121, efficientnet-b0.
        backbone_kwargs: extra network kwargs; None: ``{"widen_factor": 0.25}`` for resnets,
            else {} (see the module).
        patch_size: square patch side in pixels, 8..96.
        steps: optimizer steps (AdamW, one-cycle schedule peaking at ``lr``).
        batch_size: patches per step.
        lr: peak learning rate.
        task: pretext labels: "both", "photo" or "rotation".
        seed: seed of the weights and the patch sampling.
        device: "auto", "cpu", "cuda", ...
        progress: print the loss five times during training.

    Returns:
        The path of the checkpoint's ``model.json``.

    Raises:
        ValueError: naming the argument (unknown backbone or task, sizes out of range,
            ``out`` holding something else), before anything is written.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "natural"
        >>> path = pretrain_natural(out, steps=2, batch_size=4, patch_size=16, device="cpu", progress=False)
        pretext accuracy ... (chance 0.042), ...
        >>> info = read_checkpoint_info(path)
        >>> info.architecture, info.recipe, info.extra["pretrain_config"]["steps"]
        ('resnet18', 'pretrain-natural', 2)
        >>> pretrain_natural(out, steps=2, batch_size=4, patch_size=16, device="cpu") == path  # cached
        reusing the pretrained backbone ...
        True
    """
    if task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 8 <= patch_size <= 96:
        raise ValueError(f"--patch-size must be in [8, 96] pixels, got {patch_size}")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"--steps and --batch-size must be >= 1 and --lr > 0, got {steps}, {batch_size}, {lr}")
    out = Path(out)
    if backbone_kwargs is None:
        backbone_kwargs = dict(SMALL_RESNET) if backbone.startswith("resnet") else {}
    config = {"backbone": backbone, "backbone_kwargs": backbone_kwargs, "patch_size": patch_size,
              "steps": steps, "batch_size": batch_size, "lr": lr, "task": task, "seed": seed, "photos": list(PHOTOS)}
    if _is_cached(out, config):
        console.print(f"reusing the pretrained backbone {out / HEADER_NAME} (same configuration)")
        return out / HEADER_NAME
    classes = class_names(task)
    torch.manual_seed(seed)
    try:
        model = build_model(backbone, spatial_dims=2, in_channels=3, out_channels=len(classes),
                            **backbone_kwargs)
    except TypeError as err:
        raise ValueError(f"--backbone-kwargs do not fit {backbone!r}: {err}") from err
    if head_prefix(model) is None:
        raise ValueError(f"--backbone must be a classifier (resnet18/34/50, densenet121, efficientnet-b0), "
                         f"got {backbone!r}")
    dev = resolve_device(device)
    model.to(dev).train()
    photos = load_photos(4 * patch_size)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for step in range(steps):
        x, y = sample_patches(photos, batch_size, patch_size, task, gen)
        loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress and (step + 1) % max(1, steps // 5) == 0:
            console.print(f"step {step + 1}/{steps}: loss {float(loss.detach()):.3f}")
    seconds = time.perf_counter() - start
    x, y = sample_patches(photos, EVAL_PATCHES, patch_size, task, torch.Generator().manual_seed(seed + 1))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x.to(dev)).argmax(1).cpu() == y).float().mean())
    path = save_checkpoint(out, model, classes=classes, intensity=IntensityMap(scale=255.0, clip=(0.0, 1.0),
                                                                                raw_unit="8-bit"),
                           recipe=RECIPE, extra={"pretrain_config": config, "accuracy": accuracy,
                                                 "chance": 1.0 / len(classes), "seconds": seconds})
    console.print(f"pretext accuracy {accuracy:.3f} on {EVAL_PATCHES} fresh patches (chance {1 / len(classes):.3f}), "
                  f"{seconds:.1f} s; checkpoint: {path}")
    return path
