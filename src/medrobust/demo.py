"""The demo job: the bundled MNI152 brain-tissue set, a small 3D UNet and its robustness grid.

:mod:`medrobust.data.demo` builds the data; this module trains (or reuses) the demo model
on it and describes the demo's robustness grid. ``medrobust demo`` calls
:func:`demo_model`, :func:`clean_dice` and :func:`run_demo_grid` in turn, printing as it
goes, then writes the report. ``DEMO_MODEL_KWARGS`` and ``DEMO_TRAIN`` are the demo's
network and training settings, which examples reuse.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from medrobust.data.demo import build_demo_segmentation
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.grid import run_grid
from medrobust.models.checkpoint import read_checkpoint_info
from medrobust.models.devices import resolve_device
from medrobust.training.api import train_model
from medrobust.training.loop import TrainConfig

console = Console()

# A small 3D UNet that reaches GM/WM Dice >= 0.75 in about two minutes on 2 CPU cores.
DEMO_MODEL = "unet"
DEMO_MODEL_KWARGS = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}
DEMO_TRAIN = TrainConfig(epochs=30, batch_size=2, lr=3e-3, scheduler="cosine", seed=0)


def demo_model(root: Path, progress: bool = True, device: str = "auto") -> Path:
    """Build the demo set under ``root/data`` and train (or reuse) the demo model under ``root/model``.

    A cached model is reused when its recorded training config (the device aside) and
    architecture match and its history holds every epoch of ``DEMO_TRAIN``.

    Args:
        root: the demo folder.
        progress: show the training progress bar.
        device: where to train: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``, ...

    Returns:
        The path of the demo model's ``model.json``.

    Example:
        >>> checkpoint = demo_model(Path("medrobust-demo"))  # doctest: +SKIP
        >>> checkpoint.parent.name  # doctest: +SKIP
        'model'
    """
    datalist = build_demo_segmentation(root / "data")
    run = root / "model"
    checkpoint = run / "model.json"
    config = DEMO_TRAIN.model_copy(update={"device": device})

    def settings(train_config: dict[str, Any] | None) -> dict[str, Any]:  # the device does not make another model
        return {k: v for k, v in (train_config or {}).items() if k != "device"}

    wanted = {"architecture": DEMO_MODEL, "train_config": settings(config.model_dump(mode="json"))}
    if checkpoint.exists():
        meta = json.loads(checkpoint.read_text())
        history = run / "history.csv"
        done = history.exists() and len(history.read_text().strip().splitlines()) - 1 >= DEMO_TRAIN.epochs
        if done and {"architecture": meta.get("architecture"),
                     "train_config": settings((meta.get("extra") or {}).get("train_config"))} == wanted:
            console.print(f"reusing the trained demo model {checkpoint}")
            return checkpoint
    train_model(datalist, DEMO_MODEL, run, model_kwargs=DEMO_MODEL_KWARGS, config=config, progress=progress)
    return checkpoint


def clean_dice(checkpoint: Path) -> tuple[int, dict[str, float]]:
    r"""The validation Dice per foreground class of the best epoch, read from the run's history.

    Args:
        checkpoint: ``model.json`` of a segmentation run written by the training loop (its
            folder holds ``history.csv``; ``extra["epoch"]`` is the kept epoch).

    Returns:
        The kept epoch and its Dice per class name, background excluded (classes without a
        value in the history are left out).

    Example:
        >>> import tempfile
        >>> from medrobust.models import build_model, save_checkpoint
        >>> run = Path(tempfile.mkdtemp())
        >>> net = build_model("unet", spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,))
        >>> path = save_checkpoint(run, net, classes=["bg", "gm", "wm"], extra={"epoch": 2})
        >>> _ = (run / "history.csv").write_text("epoch,val_dice_1,val_dice_2\n1,0.5,0.4\n2,0.8,0.7\n")
        >>> clean_dice(path)
        (2, {'gm': 0.8, 'wm': 0.7})
    """
    info = read_checkpoint_info(checkpoint)
    epoch = int(info.extra["epoch"])
    history = (checkpoint.parent / "history.csv").read_text().strip().splitlines()
    header, rows = history[0].split(","), [r.split(",") for r in history[1:]]
    best = next(r for r in rows if int(float(r[header.index("epoch")])) == epoch)
    return epoch, {info.classes[int(k.split("_")[-1])]: float(best[header.index(k)])
                   for k in header if k.startswith("val_dice_") and best[header.index(k)]}


def demo_grid(checkpoint: Path, datalist: Path, results: Path, max_cases: int = 3) -> dict[str, Any]:
    """The demo's robustness grid as a grid-config mapping.

    White-box and black-box L-inf attacks at three eps (their worst case per case is the
    headline), a **short** version of the segmentation ensemble at the largest eps (5 steps
    per member instead of the paper's 200-300: the demo says so in its name; run
    ``attack: seg-ensemble`` without ``steps`` for the real one), and VAFA at two frequency
    budgets q_max.

    Args:
        checkpoint: the model's ``model.json``.
        datalist: the demo's ``dataset.json``; its test split is attacked.
        results: the grid's output folder.
        max_cases: test cases in the grid.

    Returns:
        A mapping :func:`~medrobust.evaluation.config.parse_config` reads.

    Example:
        >>> grid = demo_grid(Path("model.json"), Path("dataset.json"), Path("results"), max_cases=1)
        >>> [p["attack"] for p in grid["perturbations"]], grid["data"]["max_cases"]
        (['fgsm', 'pgd', 'apgd', 'square', 'seg-ensemble', 'vafa3d'], 1)
    """
    eps = [2.0, 4.0, 8.0]
    linf = {"eps": eps, "eps_unit": "1/255", "norm": "linf"}
    return {
        "models": [{"name": "demo-unet", "checkpoint": str(checkpoint)}],
        "data": {"datalist": str(datalist), "split": "test", "max_cases": max_cases},
        "perturbations": [
            {"attack": "fgsm", **linf, "options": {"loss": "dice_ce"}},
            {"attack": "pgd", **linf, "options": {"steps": 10, "loss": "dice_ce"}},
            {"attack": "apgd", **linf, "options": {"steps": 10, "loss": "ce"}},
            {"attack": "square", **linf, "options": {"steps": 50}},
            {"attack": "seg-ensemble", "name": "seg-ensemble-short-5-steps", "eps": [eps[-1]], "eps_unit": "1/255",
             "norm": "linf", "options": {"steps": 5, "seed": 0}},
            {"attack": "vafa3d", "norm": "dct", "eps": [10.0, 20.0], "eps_unit": "1/255",
             "options": {"steps": 10, "block_size": [32, 32, 32]}},
        ],
        "metrics": ["dice", "ssim", "psnr"],
        "out": str(results), "examples": 3, "masking_check": True, "seed": 0,
    }


def run_demo_grid(checkpoint: Path, root: Path, max_cases: int = 3, device: str = "auto") -> Path:
    """Run (or resume) the demo grid of ``checkpoint`` on ``root/data`` into ``root/results``.

    Args:
        checkpoint: the demo model's ``model.json`` (from :func:`demo_model`).
        root: the demo folder.
        max_cases: test cases in the grid.
        device: where to evaluate (``auto``: CUDA when present); the grid records the device
            it resolves to (``cpu`` on a machine without CUDA, as before).

    Returns:
        The results folder (``results.sqlite``, ``results.csv``, examples).

    Example:
        >>> results = run_demo_grid(demo_model(Path("medrobust-demo")), Path("medrobust-demo"))  # doctest: +SKIP
    """
    grid = demo_grid(checkpoint, root / "data" / "dataset.json", root / "results", max_cases)
    config = parse_config({**grid, "device": str(resolve_device(device))}, source="medrobust demo")
    return run_grid(config)
