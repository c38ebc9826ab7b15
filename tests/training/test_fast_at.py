"""Fast-AT trains on the last iterate, the FGSM step from a random start, as Wong et al. 2020,
and pays two forwards per batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.training import build_recipe
from medrobust.training.recipes import StepInfo
from medrobust.units import IntensityMap


def _wong_fgsm_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, alpha: float,
                    lower_limit: float, upper_limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Transcription of one batch of locuslab/fast_adversarial (CIFAR10/train_fgsm.py), random init.

    Returns the image the model is trained on, X + delta, and the training loss.
    """
    delta = torch.zeros_like(x)
    for j in range(x.shape[1]):
        delta[:, j].uniform_(-epsilon, epsilon)
    delta.data = torch.max(torch.min(delta, upper_limit - x), lower_limit - x)  # clamp(delta, lower - X, upper - X)
    delta.requires_grad = True
    output = model(x + delta)
    loss = F.cross_entropy(output, y)
    loss.backward()
    assert delta.grad is not None
    grad = delta.grad.detach()
    delta.data = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
    delta.data = torch.max(torch.min(delta, upper_limit - x), lower_limit - x)
    delta = delta.detach()
    output = model(x + delta)
    return x + delta, F.cross_entropy(output, y)


def test_fast_at_is_wong_et_al_fgsm_from_a_random_start_with_two_forwards() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    recipe = build_recipe("fast_at", eps=8, eps_unit="1/255")
    recipe.intensity = IntensityMap(0.0, 1.0, (0.0, 1.0))  # valid range [0, 1], as the reference's limits
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach().clone()))

    torch.manual_seed(1)
    loss, _ = recipe.batch_loss(model, x, y, StepInfo(0, 0, 1))
    forwards, x_trained = len(seen), seen[-1]
    torch.manual_seed(1)
    x_wong, loss_wong = _wong_fgsm_step(model, x, y, 8 / 255, 10 / 255, 0.0, 1.0)

    assert forwards == 2  # the step's gradient and the training loss; no forward to pick a "best" iterate
    torch.testing.assert_close(x_trained, x_wong, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, loss_wong, atol=1e-6, rtol=1e-6)
    assert recipe.passes_per_batch == 2
