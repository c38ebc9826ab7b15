"""Item 6 and the grid's checks: a replaced image makes the rerun refuse, naming the file; an absent
CUDA device is refused before any work; a model name is never read as rich markup."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.cli import main
from medrobust.data.io import write_nifti
from medrobust.evaluation.config import GridConfigError, load_config
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from tests.reliability.conftest import AFFINE, SHAPE, MakeData, write_grid


def _cases(n: int) -> list[dict[str, object]]:
    return [{"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz"} for i in range(n)]


def test_rerun_after_an_image_was_replaced_refuses_naming_it(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(_cases(2))
    grid = write_grid(tmp_path / "grid", checkpoint, data)
    assert main(["evaluate", str(grid), "--no-report"]) == 0
    assert main(["evaluate", str(grid), "--no-report"]) == 0  # unchanged data: the rerun resumes
    image = data.parent / "imagesTs" / "c1.nii.gz"
    write_nifti(image, np.random.default_rng(1).normal(100, 10, size=SHAPE).astype(np.float32), AFFINE)
    capsys.readouterr()
    assert main(["evaluate", str(grid), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"{image.resolve()} changed content" in err and "results.sqlite" in err
    with ResultStore(tmp_path / "grid" / "results" / "results.sqlite") as store:
        assert store.count() == 2  # the stale rows were not reported as new ones


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_grid_on_cuda_without_cuda_is_refused_before_work(tmp_path: Path, make_data: MakeData,
                                                          checkpoint: Path) -> None:
    grid = write_grid(tmp_path / "grid", checkpoint, make_data(_cases(1)), device="cuda")
    with pytest.raises(GridConfigError, match="device: 'cuda' asked for, but this machine has no usable CUDA"):
        run_grid(load_config(grid), progress=False)
    assert not (tmp_path / "grid" / "results").exists()


def test_model_name_with_markup_runs_with_the_progress_bar(tmp_path: Path, make_data: MakeData,
                                                           checkpoint: Path) -> None:
    grid = write_grid(tmp_path / "grid", checkpoint, make_data(_cases(1)),
                      models=[{"name": "study[/x]", "checkpoint": str(checkpoint)}])
    out = run_grid(load_config(grid), progress=True)
    with ResultStore(out / "results.sqlite") as store:
        assert set(store.to_dataframe()["model"]) == {"study[/x]"}
