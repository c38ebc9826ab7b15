"""Items 9, 17 and 20: one writer per store; a failed evaluate leaves no stamp behind."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.evaluation.store import ResultStore, StoreError, stored_config_hash
from tests.reliability.conftest import MakeData, write_grid


def _open_together(path: Path, hashes: list[str]) -> tuple[list[str], list[str]]:
    """Open one store from two threads at once; (hashes that opened it, errors of the others)."""
    start, tried = threading.Barrier(len(hashes)), threading.Barrier(len(hashes))
    opened: list[str] = []
    errors: list[str] = []

    def writer(config_hash: str) -> None:
        start.wait()
        try:
            store = ResultStore(path, config_hash, "{}")
        except StoreError as err:
            errors.append(str(err))
            tried.wait()
            return
        opened.append(config_hash)
        tried.wait()  # hold the store until every writer has tried
        store.close()

    threads = [threading.Thread(target=writer, args=(h,)) for h in hashes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return opened, errors


@pytest.mark.parametrize("hashes", [["grid-a", "grid-b"], ["grid-a", "grid-a"]], ids=["two-grids", "same-grid"])
def test_second_writer_of_a_fresh_store_stops(tmp_path: Path, hashes: list[str]) -> None:
    path = tmp_path / "out" / "results.sqlite"
    opened, errors = _open_together(path, hashes)
    assert len(opened) == 1 and len(errors) == 1
    assert str(path) in errors[0] and ("another medrobust process" in errors[0] or "different grid" in errors[0])
    assert stored_config_hash(path) == opened[0]
    other = next(h for h in hashes if h != opened[0]) if hashes[0] != hashes[1] else None
    if other is not None:  # after the first writer closed: the other grid is still refused
        with pytest.raises(StoreError, match="different grid config"):
            ResultStore(path, other)
    with ResultStore(path, opened[0]) as store:  # the lock went with the first writer
        assert store.count() == 0


def test_failed_evaluate_leaves_no_stamp(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The grid fails on its first case (inside the network) after the store was opened; the
    store is not left claimed by that grid, so the corrected grid runs."""
    data = make_data([{"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz"} for i in range(2)])
    other = make_data([{"image": "imagesTs/c0.nii.gz", "label": "labelsTs/c0.nii.gz"}], root=tmp_path / "data2")

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Sizes of tensors must match")

    with monkeypatch.context() as patched:
        patched.setattr("medrobust.evaluation.grid.evaluate_run", fails)
        store = tmp_path / "grid" / "results" / "results.sqlite"
        assert main(["evaluate", str(write_grid(tmp_path / "grid", checkpoint, other)), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert store.exists() and stored_config_hash(store) is None
    assert main(["evaluate", str(write_grid(tmp_path / "grid", checkpoint, data)), "--no-report"]) == 0
    with ResultStore(store) as opened:
        assert opened.count() == 2
