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
    assert s.update(5, 9.0) == 2  # between checks nothing moves
    assert s.update(6, 3.0) == 3 and s.threshold == pytest.approx(3.3)  # epoch % check_every == 0, MAG > threshold: up
    assert s.update(7, 9.0) == 3 and s.update(8, 9.0) == 3
    assert s.update(9, 4.0) == 4 and s.threshold == pytest.approx(4.4)
    assert s.update(12, 9.0) == 4 and s.threshold == pytest.approx(4.4)  # capped at max_iters
    assert s.update(15, 3.0) == 3 and s.threshold == pytest.approx(3.3)  # MAG < threshold/γ: down
    assert s.update(18, 3.1) == 3  # inside the band: unchanged
    assert s.update(21, 1.0) == 2 and s.update(24, 0.1) == 2  # never below 2 once adapted


class _SeatInfo:
    """SEAT's ``args`` for ``adjust_adv_iteration`` (at_main.py of TrustAI/SEAT)."""

    def __init__(self, check_mag: int, gamma: float, adv_iters: int) -> None:
        self.check_mag, self.gamma, self.adv_iters = check_mag, gamma, adv_iters


def _seat_adjust_adv_iteration(cur_epoch: int, info: dict, args: _SeatInfo, mag: float) -> None:
    """Transcription of SEAT's rule (at_main.py), called after every epoch, 1-based."""
    if cur_epoch == args.check_mag:
        info["iter"] += 1
    elif cur_epoch == args.check_mag + 1:
        info["threshold"] = mag * args.gamma
    elif cur_epoch % args.check_mag == 0:
        if mag > info["threshold"] and info["iter"] < args.adv_iters:
            info["threshold"] = args.gamma * mag
            info["iter"] += 1
        elif mag < info["threshold"] / args.gamma and info["iter"] > 2:
            info["threshold"] = args.gamma * mag
            info["iter"] -= 1


@pytest.mark.parametrize("check_every", [2, 3])
def test_schedule_matches_seat_epoch_by_epoch_on_a_rising_mag(check_every: int) -> None:
    args, info = _SeatInfo(check_mag=check_every, gamma=1.1, adv_iters=5), {"iter": 1, "threshold": 0}
    recipe = SelfAdaptiveAdversarialTraining(eps=4, check_every=check_every, gamma=1.1, max_iters=5)
    seat, ours = [], []
    for epoch in range(1, 22):
        mag = 1.2 ** epoch  # MAG rising 1.2x per epoch
        seat.append(info["iter"])  # the iterations SEAT's seat_train uses in this epoch
        recipe._mag_sum, recipe._mag_count = mag, 1
        logs = recipe.on_epoch_end(epoch - 1, {})  # the loop's 0-based epoch
        ours.append(int(logs["attack_iters"]))
        _seat_adjust_adv_iteration(epoch, info, args, mag)
        assert int(logs["next_attack_iters"]) == info["iter"], f"after epoch {epoch}"
    assert ours == seat
    assert max(ours) == 5  # the rising MAG reaches the cap, so every branch up was exercised


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


def test_overflowed_fp16_steps_are_left_out_of_mag_and_counted() -> None:
    import torch

    from medrobust.training.recipes import StepInfo

    recipe = SelfAdaptiveAdversarialTraining(eps=4, adv_weight=1.0, check_every=1)
    for scale, grad in ((1024.0, 2.0), (1024.0, float("inf")), (2048.0, float("nan")), (1024.0, 6.0)):
        x_adv = torch.zeros(1, 1, 4, 4, requires_grad=True)
        x_adv.grad = torch.full_like(x_adv, grad * scale)  # what the scaled backward left
        recipe._x_adv = x_adv
        recipe.after_backward(StepInfo(0, 0, 1, scaler=_Scaler(scale)))  # type: ignore[arg-type]
    logs = recipe.on_epoch_end(0, {})
    assert logs["mag"] == pytest.approx(4.0) and logs["mag_skipped"] == 2  # mean of the finite steps 2 and 6
    recipe._x_adv = None
    logs = recipe.on_epoch_end(1, {})  # epoch check_every + 1 without one finite step
    assert logs["mag_skipped"] == 0 and recipe.schedule.threshold is None  # no inf (or nan) threshold
    recipe._mag_sum, recipe._mag_count = 1.0, 1
    recipe.on_epoch_end(2, {})
    assert recipe.schedule.threshold == pytest.approx(1.1)  # set by the next finite MAG
