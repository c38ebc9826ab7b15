"""``VAFA.published`` against a transcription of the reference code (asif-hanif/vafa,
``attacks/vafa/{vafa,compression,decompression,utils}.py``, with pytorch_msssim's ``ssim``
and torch_dct's orthonormal DCT written out), and the preset through the registry, the
grid and the command line."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from monai.losses import DiceCELoss
from torch import nn

from medrobust.attacks import get_attack
from medrobust.attacks.base import AttackState
from medrobust.attacks.frequency import VAFA, dice_ce_with_background
from medrobust.attacks.ssim import SSIMReference
from medrobust.cli import main
from medrobust.cli.attack import attack_spec
from medrobust.evaluation.core import attack_for
from medrobust.evaluation.specs import AttackSpec
from medrobust.losses import get_loss
from medrobust.units import Budget, IntensityMap

from .test_vafa import phantoms, tiny_net

Q_MIN, Q_MAX = 5, 20
REFERENCE_LOSS = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)


# -- the reference, transcribed ------------------------------------------------------------
def _dct(v: torch.Tensor, axes: int, inverse: bool = False) -> torch.Tensor:
    """torch_dct.dct_{2,3}d / idct_{2,3}d(v, 'ortho') on the last ``axes`` axes."""
    for axis in range(-1, -axes - 1, -1):
        m = torch.from_numpy(scipy.fft.dct(np.eye(v.shape[axis]), norm="ortho", axis=0)).to(v)
        v = torch.movedim(torch.movedim(v, axis, -1) @ (m if inverse else m.T), -1, axis)
    return v


def _at(index: Sequence[Any]) -> Any:
    """``(..., *index)``: an index of the trailing axes."""
    return (Ellipsis, *index)


def _split(images: torch.Tensor, block: tuple[int, ...]) -> torch.Tensor:
    """block_splitting_3d / _2d: ``[..., *spatial]`` -> ``[..., N_Blocks, *block]``."""
    slices = dense_patch_slices(images.shape[-len(block):], block, block)
    return torch.stack([images[_at(sl)] for sl in slices], dim=-len(block) - 1)


def _merge(blocks: torch.Tensor, block: tuple[int, ...], shape: torch.Size) -> torch.Tensor:
    """block_merging_3d / _2d (square slices here, so its swapped H and W do not matter)."""
    out = torch.zeros(shape, dtype=blocks.dtype)
    for i, sl in enumerate(dense_patch_slices(shape[-len(block):], block, block)):
        out[_at(sl)] = blocks.select(-len(block) - 1, i)
    return out


def _phi_diff(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """utils.phi_diff (AdvDrop's differentiable rounding)."""
    s = 1 / (1 - alpha)
    k = torch.log(2 / alpha - 1)
    phi_x = torch.tanh((x - (torch.floor(x) + 0.5)) * k) * s
    return (phi_x + 1) / 2 + torch.floor(x)


def _msssim(x: torch.Tensor, y: torch.Tensor, win_size: int = 3, sigma: float = 1.5) -> torch.Tensor:
    """pytorch_msssim.ssim(x, y, data_range=1, size_average=True, win_size=3, nonnegative_ssim=True), 5D."""
    coords = torch.arange(win_size, dtype=x.dtype) - win_size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    channels = x.shape[1]

    def gaussian_filter(v: torch.Tensor) -> torch.Tensor:
        for i, size in enumerate(v.shape[2:]):
            if size >= win_size:
                shape = [1, 1, 1, 1, 1]
                shape[2 + i] = win_size
                v = F.conv3d(v, g.reshape(shape).repeat(channels, 1, 1, 1, 1), groups=channels)
        return v

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu1, mu2 = gaussian_filter(x), gaussian_filter(y)
    sigma1_sq = gaussian_filter(x * x) - mu1 ** 2
    sigma2_sq = gaussian_filter(y * y) - mu2 ** 2
    sigma12 = gaussian_filter(x * y) - mu1 * mu2
    cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = ((2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)) * cs_map
    return torch.relu(ssim_map.flatten(2).mean(-1)).mean()


def _reference_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, q_tables: torch.Tensor,
                    alpha: torch.Tensor, block: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration of VAFA.forward (3D block, use_ssim_loss=True) or VAFA_2D.forward (2D
    block): (the updated q tables, the image the model saw)."""
    q_tables = q_tables.clone().requires_grad_(True)
    two_d = len(block) == 2
    volume = images.permute(0, 1, 4, 2, 3) if two_d else images  # VAFA_2D: [B,C,H,W,D] -> [B,C,D,H,W]
    blocks = _split(volume * 255, block)
    quantized = _phi_diff((_dct(blocks - 128, len(block))) / q_tables, alpha)
    adv_images = _merge(_dct(quantized * q_tables, len(block), inverse=True) + 128, block, volume.shape)
    if two_d:
        adv_images = adv_images.permute(0, 1, 3, 4, 2)
    maxx = torch.amax(adv_images, dim=(2, 3), keepdim=True)
    minn = torch.amin(adv_images, dim=(2, 3), keepdim=True)
    adv_images = (adv_images - minn) / (maxx - minn)
    adv_loss = -1 * REFERENCE_LOSS(model(adv_images), labels)
    if not two_d:
        im1 = _split(images, block).squeeze(1).permute(1, 0, 4, 2, 3)
        im2 = _split(adv_images, block).squeeze(1).permute(1, 0, 4, 2, 3)
        adv_loss = adv_loss + (1 - _msssim(im1, im2))
    adv_loss.backward()
    assert q_tables.grad is not None
    updated = torch.clamp(q_tables.detach() - torch.sign(q_tables.grad), Q_MIN, Q_MAX).detach()
    return updated, adv_images.detach()


def _reference_layout(q: torch.Tensor, block: tuple[int, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    """Our table ``(B, C, *lead, *n_blocks, *block)`` in the reference's block order."""
    if block[-1] == 1:  # VAFA-2D: ours (B, C, nH, nW, D, bh, bw, 1); the reference's (B, C, D, N, bh, bw)
        q, block, spatial = q[..., 0].permute(0, 1, 4, 2, 3, 5, 6), block[:2], spatial[:2]
    k = len(block)
    starts = [tuple(int(s.start) // b for s, b in zip(sl, block))
              for sl in dense_patch_slices(spatial, block, block)]
    return torch.stack([q[_at((*n, *([slice(None)] * k)))] for n in starts], dim=-k - 1)


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = phantoms(2, seed=3)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)).double().eval()
    return model, x.double(), (y + (x > 0.6).long()).clamp(0, 2)  # three classes, background included


# -- the q updates equal the reference's -----------------------------------------------------
@pytest.mark.parametrize("block", [(8, 8, 8), (8, 8)])
def test_published_q_updates_equal_the_reference_code(block: tuple[int, ...]) -> None:
    model, x, y = _setup()
    steps = 3
    attack = VAFA.published(q_max=Q_MAX, steps=steps, block_size=block)
    state = AttackState.create(attack.budget, x, attack.budget.eps_for(x), None, None)
    attack.init_state(x, state)
    ref_q = _reference_layout(state.var, attack.blocks_for(x), tuple(x.shape[2:]))
    assert (ref_q == Q_MAX).all()
    # the reference's alpha: float32 tensors, 0.1 plus (1e-20 - 0.1) / steps per step
    alpha, interval = torch.tensor(0.1), torch.tensor((1e-20 - 0.1) / steps)
    for t in range(1, steps + 1):
        x_adv, _, grad, _ = attack._gain_and_grad(model, x, y, state, t, False)
        attack.update(x, state, grad, torch.zeros(2), t)
        attack.project(x, state)
        ref_q, ref_adv = _reference_step(model, x, y, ref_q, alpha, block)
        alpha = alpha + interval
        assert torch.allclose(x_adv, ref_adv, atol=1e-9), f"step {t}: the image the model sees"
        ours = _reference_layout(state.var, attack.blocks_for(x), tuple(x.shape[2:]))
        assert torch.equal(ours, ref_q), f"step {t}: {(ours != ref_q).sum()} q entries differ"
        assert (ours < Q_MAX).any() and (ours > Q_MIN).any()


def test_published_run_ends_on_the_reference_table() -> None:
    model, x, y = _setup()
    steps, block = 3, (8, 8, 8)
    result = VAFA.published(steps=steps, block_size=block).run(model, x, y)
    q = torch.full((2, 1, 8, *block), float(Q_MAX), dtype=torch.float64)
    alpha, interval = torch.tensor(0.1), torch.tensor((1e-20 - 0.1) / steps)
    for _ in range(steps):
        q, _ = _reference_step(model, x, y, q, alpha, block)
        alpha = alpha + interval
    flat = q.reshape(2, -1)
    assert torch.allclose(result.extra["q_mean"], flat.mean(1))
    assert torch.equal(result.extra["q_smallest"], flat.amin(1))
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_block_ssim_equals_pytorch_msssim_transcription() -> None:
    x, _ = phantoms(2, seed=4)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ours = SSIMReference(x.double(), 1.0, win_size=3, block=(8, 8, 8))(y.double())
    im1 = _split(x.double(), (8, 8, 8)).squeeze(1).permute(1, 0, 4, 2, 3)
    im2 = _split(y.double(), (8, 8, 8)).squeeze(1).permute(1, 0, 4, 2, 3)
    assert torch.allclose(ours.mean(), _msssim(im1, im2), atol=1e-12)
    assert (ours < 1).all()


def test_attack_loss_is_the_reference_dice_ce_with_background() -> None:
    model, x, y = _setup()
    logits = model(x)
    assert torch.allclose(dice_ce_with_background(logits, y).mean(), REFERENCE_LOSS(logits, y))
    assert not torch.allclose(dice_ce_with_background(logits, y), get_loss("dice_ce")(logits, y))  # background counts
    assert VAFA.published().loss_name == "dice_ce_with_background"


# -- defaults and the preset's reach -----------------------------------------------------------
def test_vafa2d_has_no_ssim_term_by_default() -> None:
    x, _ = phantoms(1)
    two_d, three_d = VAFA(block_size=(8, 8)), VAFA(block_size=(8, 8, 8))
    assert (two_d.ssim_weight, three_d.ssim_weight) == (0.0, 1.0)
    state = AttackState.create(two_d.budget, x, two_d.budget.eps_for(x), None, None)
    two_d.init_state(x, state)
    assert state.aux["ssim"] is None
    assert VAFA(block_size=(8, 8), ssim_weight=0.5).ssim_weight == 0.5
    budget = Budget.linf(4, unit="1/255", valid_range=(0.0, 1.0))
    default_2d = get_attack("vafa2d", budget, block_size=(8, 8))
    assert isinstance(default_2d, VAFA) and default_2d.ssim_weight == 0.0


def test_published_settings() -> None:
    a3, a2 = VAFA.published(), VAFA.published(block_size=(32, 32))
    assert (a3.steps, a3.q_min, a3.q_init, a3.q_step, a3.rounding, a3.ssim, a3.ssim_weight) == (
        20, 5.0, 20.0, 1.0, "tanh", "block", 1.0)
    assert (a3.soft_forward, a3.level_shift, a3.rescale_slices) == (True, 128.0, True)
    assert (a2.steps, a2.ssim_weight) == (10, 0.0)
    assert VAFA.published(steps=4, ssim_weight=0.0).steps == 4  # options override the preset


@pytest.mark.parametrize("kwargs, match", [({"ssim": "ms"}, "ssim"), ({"soft_forward": True}, "soft_forward"),
                                           ({"level_shift": 300.0}, "level_shift")])
def test_bad_reference_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VAFA(**kwargs)


def test_rescaled_slices_span_the_valid_range_and_stay_finite() -> None:
    x, y = phantoms(1)
    x[..., 3] = 0.4  # a constant slice: NaN in the reference
    result = VAFA.published(steps=1, block_size=(8, 8, 8), valid_range=(-1.0, 2.0)).run(tiny_net(), x, y)
    assert torch.isfinite(result.x_adv).all()
    slices = result.x_adv[0, 0].permute(2, 0, 1).reshape(16, -1)
    others = [d for d in range(16) if d != 3]
    assert torch.allclose(slices[others].amin(1), torch.full((15,), -1.0), atol=1e-6)
    assert torch.allclose(slices[others].amax(1), torch.full((15,), 2.0), atol=1e-6)


def test_preset_through_the_registry_and_the_grid() -> None:
    budget = Budget.linf(0, valid_range=(0.0, 1.0))
    attack = get_attack("vafa3d", budget, preset="published", q_max=10, block_size=(8, 8, 8))
    assert isinstance(attack, VAFA) and attack.soft_forward and attack.q_max == 10 and attack.q_min == 5
    with pytest.raises(ValueError, match="preset"):
        get_attack("vafa3d", budget, preset="paper")
    spec = AttackSpec(attack="vafa3d", norm="dct", eps=[20], eps_unit="1/255",
                      options={"preset": "published", "block_size": [8, 8, 8]})
    _, grid_attack = attack_for(spec, 20.0, torch.rand(1, 1, 16, 16, 16), IntensityMap(0.0, 1.0, (0.0, 1.0)))
    assert repr(grid_attack) == repr(VAFA.published(q_max=20, block_size=(8, 8, 8)))


def test_preset_from_the_command_line() -> None:
    spec = attack_spec("vafa2d", 4.0, "1/255", "linf", None, None, None, 1, 20.0, "8,8", None, preset="published")
    assert spec.options == {"preset": "published", "block_size": (8, 8)}
    _, attack = attack_for(spec, 20.0, torch.rand(1, 1, 16, 16, 4), IntensityMap(0.0, 1.0, (0.0, 1.0)))
    assert repr(attack) == repr(VAFA.published(q_max=20, block_size=(8, 8)))
    plain = attack_spec("vafa3d", 4.0, "1/255", "linf", None, None, None, 1, 20.0, None, None)
    assert plain.options == {"steps": 20}
    with pytest.raises(ValueError, match="--preset"):
        attack_spec("vafa3d", 4.0, "1/255", "linf", None, None, None, 1, 20.0, None, None, preset="paper")
    with pytest.raises(ValueError, match="--preset"):
        attack_spec("pgd", 4.0, "1/255", "linf", None, None, None, 1, 20.0, None, None, preset="published")


def test_command_line_refuses_a_preset_of_a_voxel_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["attack", "--checkpoint", str(tmp_path / "model.json"), "--data", str(tmp_path / "dataset.json"),
            "--out", str(tmp_path / "adv"), "--attack", "pgd", "--preset", "published"]
    assert main(argv) == 2
    assert "--preset" in capsys.readouterr().err
