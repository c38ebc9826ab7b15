"""Training state is saved without pickling and joins back exactly."""
from __future__ import annotations

import torch

from medrobust.training.state import load_state, save_state


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    save_state(tmp_path, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 3,
                          "pair": (1, 2.5), "best": float("-inf")})
    back = load_state(tmp_path)
    assert back["epoch"] == 3 and back["pair"] == (1, 2.5) and back["best"] == float("-inf")
    ref = opt.state_dict()
    assert set(back["optimizer"]["state"]) == set(ref["state"])  # integer keys survive JSON
    for k, v in ref["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(back["optimizer"])
    assert back["scheduler"]["last_epoch"] == 1
    assert not list(tmp_path.glob("*.tmp*"))
