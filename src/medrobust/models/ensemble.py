"""``Ensemble``: several models as one differentiable model (registered as "ensemble").

``build_model("ensemble", members=[{"architecture": "unet", "kwargs": {...}}, ...],
mode="mean_probs")`` builds the members recursively; members' kwargs default
``spatial_dims``, ``in_channels`` and ``out_channels`` to the ensemble's.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from medrobust.models.registry import build_model, register_model

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
