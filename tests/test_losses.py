"""Per-sample attack/training losses: shapes, values against references, ignore masks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from medrobust.losses import LOSS_NAMES, get_loss

SHAPES = [((3, 4), (3,)), ((2, 3, 5, 6), (2, 1, 5, 6)), ((2, 3, 4, 5, 3), (2, 1, 4, 5, 3))]


def _case(logit_shape, label_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(logit_shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, logit_shape[1], label_shape, generator=g)
    return logits, y


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("logit_shape,label_shape", SHAPES)
def test_every_loss_is_per_sample_and_differentiable(name, logit_shape, label_shape) -> None:
    logits, y = _case(logit_shape, label_shape)
    loss = get_loss(name)(logits, y, step=2, total_steps=4)
    assert loss.shape == (logit_shape[0],)
    assert torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert grad.abs().sum() > 0
    # per sample: sample 0's loss does not depend on sample 1's logits
    (g0,) = torch.autograd.grad(get_loss(name)(logits, y, step=2, total_steps=4)[0], logits)
    assert g0[1:].abs().sum() == 0


def test_ce_matches_torch() -> None:
    logits, y = _case((2, 3, 5, 6), (2, 1, 5, 6))
    ref = F.cross_entropy(logits, y[:, 0], reduction="none").mean((1, 2))
    torch.testing.assert_close(get_loss("ce")(logits, y), ref)
    lc, yc = _case((3, 4), (3,))
    torch.testing.assert_close(get_loss("ce")(lc, yc), F.cross_entropy(lc, yc, reduction="none"))


def test_dice_matches_monai_and_dice_ce_is_the_sum() -> None:
    logits, y = _case((2, 3, 5, 6), (2, 1, 5, 6))
    ref = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, reduction="none")(logits, y)
    torch.testing.assert_close(get_loss("dice")(logits, y), ref.reshape(2, -1).mean(1))
    total = get_loss("dice")(logits, y) + get_loss("ce")(logits, y)
    torch.testing.assert_close(get_loss("dice_ce")(logits, y), total)
    perfect = F.one_hot(y[:, 0], 3).movedim(-1, 1).double() * 50
    assert (get_loss("dice")(perfect, y) < 1e-6).all()


def test_ignore_mask_removes_voxels() -> None:
    logits, y = _case((2, 3, 5, 6), (2, 1, 5, 6))
    ignore = torch.zeros(2, 1, 5, 6, dtype=torch.bool)
    ignore[:, :, :2] = True
    changed = logits.detach().clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 6, dtype=torch.float64) * 10
    for name in LOSS_NAMES:
        fn = get_loss(name)
        a, b = fn(logits, y, ignore_mask=ignore), fn(changed, y, ignore_mask=ignore)
        torch.testing.assert_close(a, b, msg=f"{name} looked at ignored voxels")
        assert not torch.allclose(fn(logits, y), fn(changed, y)), name
    ce_kept = F.cross_entropy(logits, y[:, 0], reduction="none")[:, 2:].mean((1, 2))
    torch.testing.assert_close(get_loss("ce")(logits, y, ignore_mask=ignore), ce_kept)


def test_segpgd_weights_follow_lambda_t() -> None:
    logits, y = _case((2, 3, 5, 6), (2, 1, 5, 6))
    ce = F.cross_entropy(logits, y[:, 0], reduction="none")
    correct = (logits.argmax(1) == y[:, 0]).double()
    for t, total in ((1, 4), (3, 4), (4, 4)):
        lam = (t - 1) / (2 * total)
        ref = ((1 - lam) * correct * ce + lam * (1 - correct) * ce).mean((1, 2))
        torch.testing.assert_close(get_loss("segpgd")(logits, y, step=t, total_steps=total), ref)
    with pytest.raises(ValueError, match="step"):
        get_loss("segpgd")(logits, y, step=5, total_steps=4)


def test_cospgd_weight_is_stop_gradient_cosine() -> None:
    logits, y = _case((2, 3, 5, 6), (2, 1, 5, 6))
    onehot = F.one_hot(y[:, 0], 3).movedim(-1, 1).double()
    cos = F.cosine_similarity(logits.softmax(1), onehot, dim=1).detach()
    ce = F.cross_entropy(logits, y[:, 0], reduction="none")
    ref = (cos * ce).mean((1, 2))
    got = get_loss("cospgd")(logits, y)
    torch.testing.assert_close(got, ref)
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g_got, g_ref)


def test_dlr_value_and_two_class_fallback() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    # sample 0: -(3 - 1) / (3 - 0); sample 1: -(0 - 2) / (2 - 0.5)
    torch.testing.assert_close(get_loss("dlr")(z, y), torch.tensor([-2 / 3, 2 / 1.5]))
    z2 = torch.tensor([[2.0, -1.0], [0.0, 1.5]])
    torch.testing.assert_close(get_loss("dlr")(z2, y), torch.tensor([-3.0, 1.5]))
    torch.testing.assert_close(get_loss("dlr")(z2, y), get_loss("margin")(z2, y))


def test_bad_names_and_label_shapes_raise() -> None:
    with pytest.raises(ValueError, match="allowed: ce"):
        get_loss("hinge")
    logits, _ = _case((2, 3, 5, 6), (2, 1, 5, 6))
    with pytest.raises(ValueError, match="y"):
        get_loss("ce")(logits, torch.zeros(2, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="y"):
        get_loss("dice")(torch.randn(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_mask"):
        get_loss("ce")(logits, torch.zeros(2, 1, 5, 6, dtype=torch.long), ignore_mask=torch.zeros(2, 5, 6))
