"""Cooperative training with latent-space masking (seed 003; Chen et al., MICCAI 2021).

For the composite :class:`~medrobust.models.cooperative.CooperativeNet` (FTN + STN), one batch:

    x~ = x + sigma * N(0, 1)           (sigma = 0.05, model units)
    z_i = encode(x~), z_s = decouple(z_i), s = decode_seg(z_s), r = decode_image(z_i)
    standard = CE(s, y) + w * MSE(r, x) + CE(refine(s), y) + CE(STN(onehot(y)), y)   (w = 0.5)
    hard     = the same four terms with x~ -> x_hard and onehot(y) -> softmax(s_hard / T)
    loss     = standard + hard

Hard examples: z_i and z_s are masked (one scheme drawn per batch for each code, see
:mod:`medrobust.training.masking`; targeted masks rank by the gradient of MSE(decode_image(z_i), x)
and CE(decode_seg(z_s), y)) and decoded, x_hard = decode_image(masked z_i) and
s_hard = decode_seg(masked z_s), with the decoders frozen (no parameter gradients), norm
layers' running statistics kept, and the results detached. The hard terms' pass, too, uses
batch statistics without updating the running ones (the seed's ``disable_track_bn_stats``;
the seed leaves it off for its image decoder there, here it holds for the whole net), so
the running statistics that evaluation uses follow the standard inputs only.
``masking="none"`` trains the same FTN + STN on the standard terms only (the seed's
standard configuration).
"""
from __future__ import annotations

import operator
from functools import reduce
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from medrobust.models.cooperative import CooperativeNet, unwrap_cooperative
from medrobust.training.masking import CONVENTIONS, SCHEMES, check_choice, check_fraction, frozen_norm_stats, mask_code
from medrobust.training.recipes import Recipe, StepInfo, register_recipe

MASKINGS = (*SCHEMES, "all", "none")


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of logits (B, K, *S) against labels (B, 1, *S)."""
    return F.cross_entropy(logits.float(), y[:, 0])


@register_recipe("cooperative")
class CooperativeTraining(Recipe):
    """FTN + STN cooperative training on standard and masked-latent hard examples.

    Args:
        masking: "random" (channel dropout), "channel", "spatial", "all" (one of the three
            drawn per batch for each code) or "none" (standard terms only: the baseline).
        dropout_rescale: the form of "random": True (default, the seed's ``F.dropout2d``):
            dropped channels 0, kept ones times 1/(1 - dropout_p), ``soft`` not applied;
            False: dropped channels times U[0, 0.5) (soft) or 0, kept ones unchanged
            (masking that only removes information, as the targeted schemes).
        convention: ranking of the targeted masks, "loss_increasing" or "published" (the
            seed's: largest positive gradient, which to first order makes samples easier).
        temperature: T of the STN input softmax(logits / T); must equal the model's.
        noise_sigma: std of the Gaussian input noise before encoding, model units, >= 0.
        recon_weight: weight of the MSE reconstruction terms, >= 0.
        dropout_p: channel-dropout probability of the "random" scheme, in [0, 1].
        max_fraction: targeted masks hide k = int(N * p) entries, p ~ U(0, max_fraction), in [0, 1].
        soft: masked entries times U[0, 0.5) (True, the seed's setting) or 0 (False).

    ``passes_per_batch`` counts full forward+backward passes of the training graph: 1 with
    ``masking="none"``; 3 otherwise (standard + hard graphs, plus the masking work: up to
    two decoder-only forward+backward passes for the code gradients and two decoder-only
    forwards, together about one more pass).
    """

    def __init__(self, masking: str = "all", convention: str = "loss_increasing", temperature: float = 2.0,
                 noise_sigma: float = 0.05, recon_weight: float = 0.5, dropout_p: float = 0.5,
                 max_fraction: float = 0.5, soft: bool = True, dropout_rescale: bool = True) -> None:
        self.masking = check_choice(masking, MASKINGS, "masking")
        self.convention = check_choice(convention, CONVENTIONS, "convention")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for name, value in (("noise_sigma", noise_sigma), ("recon_weight", recon_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.temperature, self.noise_sigma, self.recon_weight = float(temperature), float(noise_sigma), float(recon_weight)
        self.dropout_p = check_fraction(dropout_p, "dropout_p")
        self.max_fraction = check_fraction(max_fraction, "max_fraction")
        self.soft, self.dropout_rescale = bool(soft), bool(dropout_rescale)
        self.passes_per_batch = 1 if masking == "none" else 3

    @override
    def params(self) -> dict[str, Any]:
        return {"masking": self.masking, "convention": self.convention, "temperature": self.temperature,
                "noise_sigma": self.noise_sigma, "recon_weight": self.recon_weight, "dropout_p": self.dropout_p,
                "max_fraction": self.max_fraction, "soft": self.soft, "dropout_rescale": self.dropout_rescale}

    def network(self, model: nn.Module, y: torch.Tensor) -> CooperativeNet:
        """The CooperativeNet to train; ValueError for another model, T mismatch or class labels."""
        net = unwrap_cooperative(model)
        if net is None:
            raise ValueError(f"recipe 'cooperative' needs the 'cooperative' model (FTN + STN), got "
                             f"{type(model).__name__}; use --model cooperative")
        if abs(net.temperature - self.temperature) > 1e-12:
            raise ValueError(f"recipe temperature={self.temperature} differs from the model's {net.temperature}; "
                             "set it once, as the model kwarg temperature (--model-kwargs)")
        if y.ndim == 1:
            raise ValueError("recipe 'cooperative' is for segmentation labels (B, 1, *spatial), got class labels (B,)")
        return net

    def draw(self) -> tuple[str, float]:
        """One scheme and its p for one code.

        The scheme is the recipe's (or a uniform draw for "all"); p = dropout_p for "random",
        p ~ U(0, max_fraction) for the targeted ones.
        """
        scheme = self.masking
        if scheme == "all":
            scheme = SCHEMES[int(torch.randint(len(SCHEMES), ()))]
        p = self.dropout_p if scheme == "random" else float(torch.rand(())) * self.max_fraction
        return scheme, p

    def hard_examples(self, net: CooperativeNet, z_i: torch.Tensor, z_s: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Hard image (B, C, *S) and hard segmentation logits (B, K, *S), both detached.

        Decoders frozen: code gradients by ``torch.autograd.grad`` w.r.t. the code only,
        decoding under no_grad; norm running statistics restored afterwards.
        """
        scheme_i, p_i = self.draw()
        scheme_s, p_s = self.draw()
        with frozen_norm_stats(net):
            z_i_hard, _ = mask_code(z_i, scheme_i, p_i, convention=self.convention, soft=self.soft,
                                    rescale=self.dropout_rescale, decode=net.decode_image,
                                    loss=lambda r: F.mse_loss(r.float(), x.float()))
            z_s_hard, _ = mask_code(z_s, scheme_s, p_s, convention=self.convention, soft=self.soft,
                                    rescale=self.dropout_rescale, decode=net.decode_seg, loss=lambda s: _ce(s, y))
            with torch.no_grad():
                x_hard, s_hard = net.decode_image(z_i_hard), net.decode_seg(z_s_hard)
        logs = {f"mask_{scheme_i}_image": 1.0, f"mask_{scheme_s}_shape": 1.0, "mask_p_image": p_i,
                "mask_p_shape": p_s}
        return x_hard.detach(), s_hard.detach(), logs

    def _terms(self, net: CooperativeNet, image: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               shape_input: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The four terms for an FTN input ``image`` and an STN input ``shape_input`` (probabilities)."""
        z_i = net.encode(image)
        z_s = net.decouple(z_i)
        logits = net.decode_seg(z_s)
        recon = net.decode_image(z_i)
        terms = {"seg": _ce(logits, y), "recon": self.recon_weight * F.mse_loss(recon.float(), x.float()),
                 "shape": _ce(net.refine(logits), y), "given_shape": _ce(net.shape_correct(shape_input), y)}
        return terms, z_i, z_s

    @override
    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   step: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        net = self.network(model, y)
        x, y = net.pad(x), net.pad(y)
        noisy = x + self.noise_sigma * torch.randn_like(x)
        onehot = F.one_hot(y[:, 0], net.num_classes).movedim(-1, 1).to(x.dtype)
        terms, z_i, z_s = self._terms(net, noisy, x, y, onehot)
        loss = reduce(operator.add, terms.values())
        logs = {f"std_{k}": float(v.detach()) for k, v in terms.items()}
        if self.masking != "none":
            x_hard, s_hard, mask_logs = self.hard_examples(net, z_i, z_s, x, y)
            with frozen_norm_stats(net):  # hard inputs: batch statistics, running ones not updated
                hard, _, _ = self._terms(net, x_hard, x, y, F.softmax(s_hard / net.temperature, dim=1))
            loss = loss + reduce(operator.add, hard.values())
            logs.update({f"hard_{k}": float(v.detach()) for k, v in hard.items()})
            logs.update(mask_logs)
        logs["loss"] = float(loss.detach())
        return loss, logs
