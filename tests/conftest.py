"""Test set-up: no writes to the real home directory, one thread per test process, seeds, the gpu marker."""
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` where no CUDA device is present (they run where one is lent)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
