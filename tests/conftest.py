"""Test set-up: no writes to the real home directory, one thread per test process, seeds."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MEDROBUST_CACHE", str(home / ".cache" / "medrobust"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread: tiny test tensors gain nothing from more, and tests stay reproducible.
    torch.set_num_threads(1)
