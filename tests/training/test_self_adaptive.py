"""The self-adaptive iteration schedule through every branch of the published rule."""
from __future__ import annotations

import pytest

from medrobust.training.self_adaptive import IterationSchedule, SelfAdaptiveAdversarialTraining


def test_schedule_walks_every_branch_of_the_rule() -> None:
    s = IterationSchedule(check_every=3, gamma=1.1, max_iters=4)
    iters = [s.update(1, 1.0), s.update(2, 1.0)]
    assert iters == [1, 1] and s.threshold is None
    assert s.update(3, 1.0) == 2  # epoch check_every: add one
    assert s.update(4, 2.0) == 2 and s.threshold == pytest.approx(2.2)  # next epoch: threshold = γ·MAG
    assert s.update(5, 9.0) == 2 and s.update(6, 9.0) == 2  # between checks nothing moves
    assert s.update(7, 3.0) == 3 and s.threshold == pytest.approx(3.3)  # MAG > threshold: up
    assert s.update(10, 4.0) == 4 and s.threshold == pytest.approx(4.4)
    assert s.update(13, 9.0) == 4 and s.threshold == pytest.approx(4.4)  # capped at max_iters
    assert s.update(16, 3.0) == 3 and s.threshold == pytest.approx(3.3)  # MAG < threshold/γ: down
    assert s.update(19, 3.1) == 3  # inside the band: unchanged
    assert s.update(22, 1.0) == 2 and s.update(25, 0.1) == 2  # never below 2 once adapted


def test_schedule_state_survives_resume_and_bad_settings_fail() -> None:
    recipe = SelfAdaptiveAdversarialTraining(eps=4, check_every=2)
    for epoch, mag in enumerate([1.0, 1.0, 2.0], start=0):
        recipe._mag_sum, recipe._mag_count = mag, 1
        logs = recipe.on_epoch_end(epoch, {})
    assert logs["next_attack_iters"] == 2 and logs["mag"] == 2.0
    other = SelfAdaptiveAdversarialTraining(eps=4, check_every=2)
    other.load_state_dict(recipe.state_dict())
    assert other.schedule == recipe.schedule
    with pytest.raises(ValueError, match="gamma"):
        IterationSchedule(gamma=1.0)


class _Scaler:
    """Stands in for torch.amp.GradScaler: the loss is multiplied by ``scale`` before backward."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def get_scale(self) -> float:
        return self.scale


def test_mag_is_read_on_unscaled_gradients() -> None:
    import torch

    from medrobust.training.recipes import StepInfo
    from tests.training.tiny import BlobSegmentation, tiny_unet

    data = BlobSegmentation(2)
    x = torch.stack([it["image"] for it in data.items])
    y = torch.stack([it["label"] for it in data.items])
    mags = []
    for scale in (None, 1024.0):
        torch.manual_seed(0)
        model, recipe = tiny_unet(), SelfAdaptiveAdversarialTraining(eps=0.1, eps_unit="model")
        step = StepInfo(0, 0, 1, scaler=None if scale is None else _Scaler(scale))  # type: ignore[arg-type]
        loss, _ = recipe.batch_loss(model, x, y, step)
        (loss * (scale or 1.0)).backward()  # what scaler.scale(loss).backward() does
        recipe.after_backward(step)
        mags.append(recipe.on_epoch_end(0, {})["mag"])
    assert mags[0] > 0
    assert mags[1] == pytest.approx(mags[0], rel=1e-5)  # the loss scale does not move the proxy
