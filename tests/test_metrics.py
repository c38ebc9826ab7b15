"""Metrics against hand-computed values and scikit-image."""
from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from medrobust.metrics import (
    accuracy,
    auroc,
    balanced_accuracy,
    confusion_matrix,
    dice_per_class,
    hd95,
    perturbation_norms,
    psnr,
    ssim,
)
from medrobust.units import IntensityMap


def _labels(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros(batch, 1, *shape, dtype=torch.long)


def test_dice_on_known_overlaps() -> None:
    pred, y = _labels(2, (8, 8)), _labels(2, (8, 8))
    pred[0, 0, 2:4, 2:4] = 1  # 4 voxels, all inside y's 6
    y[0, 0, 2:4, 2:5] = 1
    pred[1, 0, 0, 0] = 2  # class 2 predicted but absent from y
    d = dice_per_class(pred, y, num_classes=3)
    assert d.shape == (2, 2)  # background excluded by default
    torch.testing.assert_close(d, torch.tensor([[2 * 4 / (4 + 6), 1.0],   # class 2 empty in both: 1
                                                [1.0, 0.0]]))              # class 1 empty in both; class 2 wrong
    with_bg = dice_per_class(pred, y, num_classes=3, include_background=True)
    assert with_bg.shape == (2, 3)
    torch.testing.assert_close(with_bg[0, 0], torch.tensor(2 * 58 / (60 + 58)))  # 64-4 vs 64-6 background voxels
    logits = torch.nn.functional.one_hot(pred[:, 0], 3).movedim(-1, 1).float() * 5.0
    torch.testing.assert_close(dice_per_class(logits, y, num_classes=3), d)


def test_dice_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        dice_per_class(_labels(1, (4, 4)) + 3, _labels(1, (4, 4)), num_classes=3)
    with pytest.raises(ValueError, match="logits"):
        dice_per_class(torch.zeros(1, 2, 4, 4), _labels(1, (4, 4)), num_classes=3)
    with pytest.raises(ValueError, match="y must be"):
        dice_per_class(_labels(1, (4, 4)), torch.zeros(1, 4, 4, dtype=torch.long), num_classes=3)


def test_hd95_is_scaled_by_spacing() -> None:
    pred, y = _labels(2, (8, 8)), _labels(2, (8, 8))
    y[:, 0, 2, 2] = 1
    pred[0, 0, 2, 5] = 1  # 3 voxels along axis 1
    pred[1, 0, 5, 6] = 1  # (3, 4) voxels away
    d = hd95(pred, y, num_classes=2, spacing=1.0)
    torch.testing.assert_close(d, torch.tensor([[3.0], [5.0]]))
    d = hd95(pred, y, num_classes=2, spacing=(2.0, 0.5))
    torch.testing.assert_close(d, torch.tensor([[1.5], [math.hypot(6.0, 2.0)]]))
    per_sample = torch.tensor([[1.0, 2.0], [0.5, 1.0]])
    torch.testing.assert_close(hd95(pred, y, num_classes=2, spacing=per_sample), torch.tensor([[6.0], [math.hypot(1.5, 4)]]))


def test_hd95_3d_and_empty_classes() -> None:
    pred, y = _labels(1, (6, 6, 6)), _labels(1, (6, 6, 6))
    y[0, 0, 1, 1, 1] = 1
    pred[0, 0, 3, 1, 1] = 1
    d = hd95(pred, y, num_classes=3, spacing=torch.tensor([2.5, 1.0, 1.0]))
    assert d[0, 0] == pytest.approx(5.0)
    assert torch.isnan(d[0, 1])  # class 2 empty everywhere: undefined


def test_classification_metrics_by_hand() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    assert accuracy(pred, y) == pytest.approx(4 / 6)
    cm = confusion_matrix(pred, y, num_classes=3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert balanced_accuracy(pred, y, num_classes=3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    logits = torch.nn.functional.one_hot(pred, 3).float()
    assert accuracy(logits, y) == pytest.approx(4 / 6)
    assert balanced_accuracy(logits, y) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # K from the logits
    assert confusion_matrix(pred, y).shape == (3, 3)  # K from the labels
    with pytest.raises(ValueError, match="y must be"):
        accuracy(pred, y[:3])


def test_auroc_known_cases() -> None:
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])  # classic example: AUC 0.75
    y = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.stack([1 - s, s], 1), y, from_logits=False) == pytest.approx(0.75)
    logits = torch.stack([torch.zeros(4), torch.log(s / (1 - s))], 1)  # softmax gives back s
    assert auroc(logits, y) == pytest.approx(0.75)
    # three classes, one-vs-rest: class 0 separable (1.0), class 1 inverted (0.0), class 2 absent (skipped)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.0, 0.9], [0.2, 0.05, 0.75]])
    assert auroc(probs, torch.tensor([0, 0, 1, 1]), from_logits=False) == pytest.approx(0.5)


def test_ssim_matches_scikit_image_2d_and_3d() -> None:
    torch.manual_seed(0)
    for shape in [(32, 32), (12, 12, 12)]:
        x = torch.rand(2, 1, *shape)
        x_adv = x + 0.1 * torch.randn_like(x)
        got = ssim(x, x_adv, data_range=1.0)
        for i in range(2):
            ref = structural_similarity(x[i, 0].double().numpy(), x_adv[i, 0].double().numpy(), data_range=1.0,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            assert got[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(ssim(x, x, 1.0), torch.ones(2))


def test_ssim_small_volume_and_per_sample_range() -> None:
    x = torch.rand(2, 1, 6, 7, 8)
    x_adv = x + 0.05 * torch.randn_like(x)
    both = ssim(x, x_adv, data_range=torch.tensor([1.0, 4.0]))
    assert both.shape == (2,) and torch.isfinite(both).all()
    assert both[0] == pytest.approx(ssim(x[:1], x_adv[:1], 1.0).item())
    assert both[1] == pytest.approx(ssim(x[1:], x_adv[1:], 4.0).item())
    with pytest.raises(ValueError, match=">= 3 voxels"):
        ssim(torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8), 1.0)


def test_psnr_by_hand() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x_adv = x + torch.tensor([0.1, 0.01]).reshape(2, 1, 1, 1)
    torch.testing.assert_close(psnr(x, x_adv, 1.0), torch.tensor([20.0, 40.0]))
    torch.testing.assert_close(psnr(x, x_adv, torch.tensor([10.0, 1.0])), torch.tensor([40.0, 40.0]))
    assert torch.isinf(psnr(x, x, 1.0)).all()
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x_adv, -1.0)


def test_perturbation_norms_in_model_and_raw_units() -> None:
    x = torch.zeros(2, 1, 2, 2)
    delta = torch.zeros_like(x)
    delta[0, 0, 0, 0], delta[0, 0, 1, 1] = 0.03, -0.04
    delta[1, 0, 0, 1] = 0.5
    imap = IntensityMap.z_score(mean=torch.tensor([100.0, 0.0]), std=torch.tensor([10.0, 2.0]))
    n = perturbation_norms(x, x + delta, imap)
    torch.testing.assert_close(n["linf_model"], torch.tensor([0.04, 0.5], dtype=torch.float64))
    torch.testing.assert_close(n["l2_model"], torch.tensor([0.05, 0.5], dtype=torch.float64))
    torch.testing.assert_close(n["linf_raw"], torch.tensor([0.4, 1.0], dtype=torch.float64))
    torch.testing.assert_close(n["l2_raw"], torch.tensor([0.5, 1.0], dtype=torch.float64))
    ct = perturbation_norms(x, x + delta, IntensityMap.ct_window(-175, 250))
    torch.testing.assert_close(ct["linf_raw"], torch.tensor([0.04 * 425, 0.5 * 425], dtype=torch.float64))
    plain = perturbation_norms(x, x + delta)
    assert torch.equal(plain["l2_raw"], plain["l2_model"])
