"""VAFT (seed 000): adversarial training on VAFA samples with frequency consistency.

loss = L(M(X), Y) + L(M(X'), Y) + λ_fr · ‖DCT(M(X)) - DCT(M(X'))‖₁ / ‖DCT(M(X))‖₁

with X' from a fresh VAFA run per batch (its quantisation table re-initialised each time)
and the DCT taken over the spatial axes of the whole logit patch, normalised as the
published code does. ``clean_term=False, freq_term=False`` is the paper's M_VAFA ablation.

VAFA's valid range (the clip of its image and the unit of q, (hi - lo)/255) is the one
evaluation gives each case: the IntensityMap's clip when it has one, else (z-scored data)
the case's own min and max, so without a clip every case of a batch is attacked alone.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from typing_extensions import override

from medrobust.attacks.base import Attack
from medrobust.attacks.dct import dct_nd
from medrobust.attacks.registry import get_attack
from medrobust.training.recipes import Recipe, StepInfo, register_recipe, task_loss
from medrobust.units import budget_for_case


def frequency_consistency(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """‖DCT(a) - DCT(b)‖₁ / ‖DCT(a)‖₁ over the spatial axes of (B, K, *spatial) logits; scalar."""
    dims = tuple(range(2, logits_clean.ndim))
    clean_f = dct_nd(logits_clean.float(), dims)
    adv_f = dct_nd(logits_adv.float(), dims)
    return (clean_f - adv_f).abs().sum() / clean_f.abs().sum().clamp_min(1e-8)


@register_recipe("vaft")
class VAFT(Recipe):
    """Volumetric adversarial frequency training.

    Args:
        q_max, steps, block_size, ssim_weight: the VAFA settings (q in (valid range)/255);
            ``steps`` None is 20 (or the preset's), ``ssim_weight`` None is VAFA's default
            (1 for 3D blocks, 0 for 2D blocks, as published) or the preset's.
        preset: the inner attack's preset, e.g. ``"published"`` (the reference code's VAFA:
            :meth:`medrobust.attacks.frequency.VAFA.published`); other settings given
            override it.
        freq_weight: λ_fr of the frequency-consistency term (1.0: the paper's Eq. 3 has no weight).
        clean_term, freq_term: keep the clean loss / the frequency term (both False: M_VAFA).
        seg_loss: the per-term task loss; Dice+CE by default, the same as ``standard``, so
            a comparison with the standard model isolates the adversarial terms.
    """

    def __init__(self, q_max: float = 20.0, steps: int | None = None,
                 block_size: tuple[int, ...] | list[int] = (32, 32, 32), ssim_weight: float | None = None,
                 freq_weight: float = 1.0, clean_term: bool = True, freq_term: bool = True,
                 preset: str | None = None) -> None:
        if freq_weight < 0:
            raise ValueError(f"freq_weight must be >= 0, got {freq_weight}")
        self.q_max, self.block_size = float(q_max), tuple(int(b) for b in block_size)
        self.steps = None if steps is None else int(steps)
        self.ssim_weight = None if ssim_weight is None else float(ssim_weight)
        self.freq_weight, self.preset = float(freq_weight), preset
        self.clean_term, self.freq_term = bool(clean_term), bool(freq_term)
        # built once here: a bad preset or setting fails now, not mid-training
        inner_steps = self._attack(torch.zeros(1, 1, *self.block_size)).steps
        self.passes_per_batch = inner_steps + (2 if clean_term or freq_term else 1)

    @override
    def params(self) -> dict[str, Any]:
        return {"q_max": self.q_max, "steps": self.steps, "block_size": list(self.block_size),
                "ssim_weight": self.ssim_weight, "freq_weight": self.freq_weight,
                "clean_term": self.clean_term, "freq_term": self.freq_term, "preset": self.preset}

    def _attack(self, x: torch.Tensor) -> Attack:
        """VAFA as evaluation builds it for ``x``: its valid range from :func:`budget_for_case`."""
        budget = budget_for_case("linf", 0.0, "model", x, self.intensity)
        given = {"preset": self.preset, "steps": self.steps, "ssim_weight": self.ssim_weight}
        return get_attack(f"vafa{len(self.block_size)}d", budget, q_max=self.q_max, block_size=self.block_size,
                          **{k: v for k, v in given.items() if v is not None})

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The VAFA batch the recipe trains on, each case within its own valid range.

        Args:
            model: the network being trained.
            x: images ``(B, C, *spatial)``, model units.
            y: labels ``(B, 1, *spatial)``.

        Returns:
            ``x_adv``, shape of ``x``: one VAFA run for the batch when the IntensityMap
            clips (one range for all), else one run per case with the case's min and max.
        """
        if self.intensity is not None and self.intensity.clip is not None:
            return self._attack(x)(model, x, y)
        return torch.cat([self._attack(x[i:i + 1])(model, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])])

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        x_adv = self.adversarial(model, x, y)
        logits_adv = model(x_adv)
        adv = task_loss(logits_adv, y)
        loss, logs = adv, {"adv_loss": float(adv.detach())}
        if self.clean_term or self.freq_term:
            logits = model(x)
            if self.clean_term:
                clean = task_loss(logits, y)
                loss = loss + clean
                logs["clean_loss"] = float(clean.detach())
            if self.freq_term:
                freq = frequency_consistency(logits, logits_adv)
                loss = loss + self.freq_weight * freq
                logs["freq_loss"] = float(freq.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs
