"""``Ensemble``: several models as one differentiable model (registered as "ensemble").

``build_model("ensemble", members=[{"architecture": "unet", "kwargs": {...}}, ...],
mode="mean_probs")`` builds the members recursively; members' kwargs default
``spatial_dims``, ``in_channels`` and ``out_channels`` to the ensemble's.
:func:`build_ensemble` joins trained checkpoints into one ensemble checkpoint (``medrobust
ensemble``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medrobust.models.registry import build_model, register_model

if TYPE_CHECKING:
    from medrobust.models.checkpoint import CheckpointInfo

ENSEMBLE_MODES = ("mean_logits", "mean_probs")


class Ensemble(nn.Module):
    """Average of member models, attacked jointly through ``forward``.

    Args:
        members: models mapping ``(B, C, *spatial)`` to logits ``(B, K, ...)``, all with the
            same K.
        mode: "mean_logits" (mean of the logits) or "mean_probs" (``log`` of the mean
            softmax, so cross-entropy and attacks see the averaged probabilities).

    ``vote(x)`` gives hard majority labels and is for evaluation only (no gradient).
    """

    def __init__(self, members: Sequence[nn.Module], mode: str = "mean_logits") -> None:
        super().__init__()
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one member model")
        specs = [getattr(m, "medrobust_spec", None) for m in members]
        classes = {s["kwargs"].get("out_channels") for s in specs if s is not None}
        if len(classes) > 1:
            raise ValueError(f"ensemble members have different class counts (out_channels {sorted(classes)})")
        self.members = nn.ModuleList(members)
        self.mode = mode
        if all(s is not None for s in specs):  # checkpointable without restating the members
            first = specs[0]["kwargs"]  # type: ignore[index]
            dims = {k: first[k] for k in ("spatial_dims", "in_channels", "out_channels") if k in first}
            self.medrobust_spec = {"architecture": "ensemble", "kwargs": {**dims, "members": specs, "mode": mode}}

    def _member_logits(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members give logits of different shapes {sorted(shapes)}; "
                             "they must share the class count")
        return torch.stack(outs)  # (M, B, K, ...)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, ...)``: mean logits, or log of the mean softmax over members."""
        z = self._member_logits(x)
        if self.mode == "mean_logits":
            return z.mean(0)
        return torch.logsumexp(torch.log_softmax(z, dim=2), dim=0) - math.log(z.shape[0])

    @torch.no_grad()
    def vote(self, x: torch.Tensor) -> torch.Tensor:
        """Majority label per sample/voxel, ``(B,)`` or ``(B, *spatial)`` (int64).

        Ties go to the class with the higher mean probability over members.
        """
        z = self._member_logits(x)
        k = z.shape[2]
        labels = z.argmax(dim=2)  # (M, B, ...)
        votes = torch.nn.functional.one_hot(labels, k).sum(0).movedim(-1, 1).to(z.dtype)  # (B, K, ...)
        # mean probabilities are < 1, so they only decide between equal vote counts
        return (votes + 0.5 * torch.softmax(z, dim=2).mean(0)).argmax(dim=1)


@register_model("ensemble")
def _build_ensemble(spatial_dims: int, in_channels: int, out_channels: int,
                    members: Sequence[dict[str, Any]] = (), mode: str = "mean_logits") -> nn.Module:
    if not members:
        raise ValueError("ensemble needs members=[{'architecture': name, 'kwargs': {...}}, ...]")
    built = []
    for i, spec in enumerate(members):
        if not isinstance(spec, dict) or "architecture" not in spec:
            raise ValueError(f"ensemble members[{i}] must be a dict with 'architecture' and 'kwargs', got {spec!r}")
        kw = {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
              **spec.get("kwargs", {})}
        built.append(build_model(spec["architecture"], **kw))
    return Ensemble(built, mode=mode)


def _differ(infos: list[CheckpointInfo], what: str, value: Callable[[CheckpointInfo], Any], allowed: str = "") -> None:
    """ValueError listing each file's value when the members disagree on ``what``."""
    values = [value(i) for i in infos]
    if any(v != values[0] for v in values):
        listing = "; ".join(f"{i.path}: {v}" for i, v in zip(infos, values))
        raise ValueError(f"--checkpoints: the members differ in {what} ({listing}){allowed}")


def _names(paths: list[Path]) -> list[str]:
    """A name per member: its run folder's name, numbered when two agree."""
    base = [(p.parent.name or p.stem) if p.name == "model.json" else p.stem for p in paths]
    return [f"{n}-{i}" if base.count(n) > 1 else n for i, n in enumerate(base)]


def build_ensemble(checkpoints: Sequence[Path], out: Path, mode: str = "mean_logits") -> Path:
    """Write ``out/model.json`` + ``model.safetensors`` of the ensemble of ``checkpoints``.

    The result is an ordinary checkpoint (architecture "ensemble", the members' specs in its
    kwargs, their weights under ``members.<i>.``), so prediction, attacks, explanations and
    the evaluation grid take it like any model. Members must agree on the class names (and
    so the class count), spatial dims, input channels, intensity normalisation and image
    size; the ensemble keeps them, and records each member's name, checkpoint and
    architecture in ``extra["members"]``.

    Args:
        checkpoints: member ``model.json`` files or their run folders (two or more).
        out: folder for the ensemble's checkpoint.
        mode: "mean_logits" or "mean_probs" (see :class:`Ensemble`).

    Returns:
        The path of the ensemble's ``model.json``.

    Raises:
        ValueError: fewer than two members, an unknown mode, or members that disagree (the
            message lists every file with its value); nothing is written then.

    Example:
        >>> import tempfile
        >>> from medrobust.models.checkpoint import read_checkpoint_info, save_checkpoint
        >>> from medrobust.models.registry import build_model
        >>> root = Path(tempfile.mkdtemp())
        >>> members = [save_checkpoint(root / f"m{i}", build_model("resnet18", spatial_dims=2, in_channels=1,
        ...            out_channels=2, widen_factor=0.125), classes=["healthy", "lesion"]) for i in range(2)]
        >>> info = read_checkpoint_info(build_ensemble(members, root / "ensemble"))
        >>> info.architecture, info.classes, [m["name"] for m in info.extra["members"]]
        ('ensemble', ['healthy', 'lesion'], ['m0', 'm1'])
    """
    # checkpoint -> wrappers re-exports Ensemble, so importing checkpoint at the top would close a circle
    from medrobust.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint

    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"--mode: must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    if len(checkpoints) < 2:
        raise ValueError(f"--checkpoints: an ensemble needs at least two member checkpoints, got {len(checkpoints)}")
    paths = [p / "model.json" if p.is_dir() else p for p in checkpoints]
    infos = [read_checkpoint_info(p) for p in paths]
    _differ(infos, "class count", lambda i: len(i.classes), "; an ensemble averages one output per class")
    _differ(infos, "class names", lambda i: i.classes)
    _differ(infos, "spatial dims", lambda i: i.spatial_dims)
    _differ(infos, "input channels", lambda i: i.in_channels)
    _differ(infos, "intensity normalisation", lambda i: ((i.extra or {}).get("normalization"),
                                                         i.intensity.to_dict() if i.intensity else None),
            "; the ensemble feeds every member the same image")
    _differ(infos, "image size", lambda i: (i.extra or {}).get("image_size"))
    models = [load_checkpoint(p)[0] for p in paths]
    first = infos[0]
    names = _names(paths)
    members = [{"name": n, "checkpoint": str(p.resolve()), "architecture": i.architecture, "recipe": i.recipe}
               for n, p, i in zip(names, paths, infos)]
    extra = {k: v for k, v in (first.extra or {}).items() if k in ("normalization", "image_size")}
    rois = {i.roi_size for i in infos}
    return save_checkpoint(out, Ensemble(models, mode=mode), classes=first.classes, intensity=first.intensity,
                           roi_size=rois.pop() if len(rois) == 1 else None, recipe="ensemble",
                           extra={**extra, "members": members})
