"""Attacks under a caller's autocast: only the model's forward runs in reduced precision."""
from __future__ import annotations

import torch
from torch import nn

from medrobust.attacks import PGD
from medrobust.attacks.dct import block_dct, block_idct
from medrobust.attacks.frequency import VAFA
from medrobust.units import Budget


def test_vafa_under_bf16_autocast_keeps_its_transform_in_float32() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 1))
    x = torch.rand(1, 1, 16, 16, 16)
    y = torch.randint(0, 3, (1, 1, 16, 16, 16))
    attack = VAFA(q_max=1.0, q_min=1.0, steps=2, block_size=(8, 8, 8), ssim_weight=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = attack(net, x, y)
        coefficients = block_dct(x, (8, 8, 8))
        bf16_round_trip = float((block_idct(coefficients, (8, 8, 8), x.shape).float() - x).abs().max())
    plain = attack(net, x, y)
    # q = 1: each coefficient rounded to 1/255 of the range (about 1/255 per voxel at most; bf16 gave 2.6/255)
    assert float((under_amp - x).abs().max()) <= 1.5 / 255
    assert float((under_amp - plain).abs().max()) < 1e-5, "the DCT, quantisation and projection ran in bf16"
    assert bf16_round_trip > 1e-3, "the test needs autocast to matter for a bare DCT round trip"


def test_pgd_under_autocast_runs_the_model_in_bf16_and_the_step_in_float32() -> None:
    seen: list[torch.dtype] = []

    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv(x)
            seen.append(out.dtype)
            return out

    x = torch.rand(2, 1, 8, 8)
    y = torch.randint(0, 2, (2, 1, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = PGD(Budget.linf(8, unit="1/255", valid_range=(0.0, 1.0)), steps=3, seed=0)(Recording(), x, y)
    assert set(seen) == {torch.bfloat16} and x_adv.dtype == torch.float32
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
