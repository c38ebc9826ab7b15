"""Experiment tracking for ``train`` and ``evaluate`` (``--log tensorboard|mlflow``; off by default).

A :class:`Tracker` receives numbered scalar rows: the training loop sends each epoch's
row (losses, validation scores, the self-adaptive schedule's ``mag``/``attack_iters``), the
grid its summary (clean score, mean score per perturbation and level, worst-case AUC).
TensorBoard writes through ``torch.utils.tensorboard`` (extra ``medrobust[log]``), MLflow
through its own client (``pip install mlflow``); either is imported only when asked for.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

TRACKERS: tuple[str, ...] = ("none", "tensorboard", "mlflow")


class Tracker(Protocol):
    """Where numbered scalar rows go."""

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Record the finite numbers of ``values`` at ``step``."""

    def close(self) -> None:
        """Flush and release the files or the run."""


class _NoTracker:
    def log(self, step: int, values: Mapping[str, float]) -> None:
        return None

    def close(self) -> None:
        return None


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


class TensorBoardTracker:
    """Scalars into TensorBoard event files under ``folder``.

    Args:
        folder: the event files' folder (created).

    Example:
        >>> import tempfile
        >>> tracker = TensorBoardTracker(Path(tempfile.mkdtemp()))
        >>> tracker.log(1, {"train_loss": 0.5, "note": "skipped", "nan": float("nan")})
        >>> tracker.close()
    """

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Add each finite number of ``values`` as a scalar at ``step``."""
        for key, value in _finite(values).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush the event file."""
        self.writer.flush()
        self.writer.close()


class MLflowTracker:
    """Metrics of one MLflow run (the tracking URI is MLflow's own setting, default ``./mlruns``).

    Args:
        name: the run's name.
    """

    def __init__(self, name: str) -> None:
        import mlflow  # type: ignore[import-not-found]

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=name)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Log each finite number of ``values`` as a metric at ``step``."""
        metrics = {k.replace("=", "_"): v for k, v in _finite(values).items()}
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        """End the run."""
        self.mlflow.end_run()


def check_tracker(kind: str, what: str = "--log") -> None:
    """Fail before anything is written when ``kind`` is unknown or its package is missing.

    Args:
        kind: ``none``, ``tensorboard`` or ``mlflow``.
        what: the option named in errors.

    Raises:
        ValueError: an unknown kind, or its package not installed (the message says which extra).

    Example:
        >>> check_tracker("none")
        >>> check_tracker("wandb")
        Traceback (most recent call last):
        ...
        ValueError: --log: 'wandb' is not a tracker; allowed: none, tensorboard, mlflow
    """
    if kind not in TRACKERS:
        raise ValueError(f"{what}: {kind!r} is not a tracker; allowed: {', '.join(TRACKERS)}")
    package = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(kind)
    if package is not None and importlib.util.find_spec(package) is None:
        extra = "pip install 'medrobust[log]'" if kind == "tensorboard" else "pip install mlflow"
        raise ValueError(f"{what}: {kind} is not installed; {extra}")


def open_tracker(kind: str, folder: Path, what: str = "--log") -> Tracker:
    """The tracker ``kind`` names, writing beside a run's outputs.

    Args:
        kind: ``none``, ``tensorboard`` (event files in ``folder``) or ``mlflow``.
        folder: TensorBoard's folder; its name is MLflow's run name.
        what: the option named in errors.

    Returns:
        A :class:`Tracker` (``none``: one that records nothing).

    Raises:
        ValueError: an unknown kind, or its package not installed (the message says which extra).

    Example:
        >>> open_tracker("none", Path("unused")).log(0, {"x": 1.0})
        >>> open_tracker("wandb", Path("unused"))
        Traceback (most recent call last):
        ...
        ValueError: --log: 'wandb' is not a tracker; allowed: none, tensorboard, mlflow
    """
    check_tracker(kind, what)
    if kind == "none":
        return _NoTracker()
    return TensorBoardTracker(folder) if kind == "tensorboard" else MLflowTracker(folder.parent.name or "medrobust")

