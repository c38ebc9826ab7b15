"""The grid runner on tiny phantoms: rows, outputs, bad input, resume after SIGKILL, sharding."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.evaluation import robustness as rb
from medrobust.evaluation.config import GridConfigError, load_config
from medrobust.evaluation.core import run_seed
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.registry import build_model

SRC = Path(__file__).parents[2] / "src"
# columns that legitimately differ between two runs of the same grid
VOLATILE = ["id", "seconds", "attack_seconds", "created"]



@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grid-assets")
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=1, n_val=1, n_test=3)
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                      num_res_units=0)
    ckpt = save_checkpoint(root / "ckpt", net, classes=["background", "class1", "class2"],
                           extra={"normalization": "zscore"})
    return {"root": root, "datalist": data / "dataset.json", "checkpoint": ckpt}


def grid_yaml(folder: Path, assets: dict[str, Path], out: str = "results", steps: int = 3, **extra: object) -> Path:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets["datalist"]), "split": "test"},
           "perturbations": [{"attack": "fgsm", "eps": [2, 8], "eps_unit": "1/255"},
                             {"attack": "pgd", "eps": [2, 8], "eps_unit": "1/255", "options": {"steps": steps}},
                             {"attack": "square", "eps": [2, 8], "eps_unit": "1/255", "options": {"steps": 10}}],
           "out": out, "examples": 2, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def runs(out: Path) -> pd.DataFrame:
    with ResultStore(out / "results.sqlite") as store:
        df = store.to_dataframe()
    return df.drop(columns=VOLATILE).sort_values(["perturbation", "eps_stated", "case_id"]).reset_index(drop=True)


def test_grid_writes_one_row_per_run_and_its_outputs(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = run_grid(grid_yaml(tmp_path, assets, save_adversarial=True, metrics=["dice", "hd95", "ssim", "psnr"]),
                   progress=False)
    df = runs(out)
    assert len(df) == 3 * 2 * 3 and not df.duplicated(["perturbation", "eps_stated", "case_id"]).any()
    assert (df["linf_model"] <= df["eps_model"] + 1e-6).all()
    assert np.allclose(df["eps_model"], df["eps_stated"] / 255 * (df["eps_model"] * 255 / df["eps_stated"]))
    assert df["clean_hd95"].map(lambda d: set(d) == {"class1", "class2"}).all()
    assert df["ssim"].between(0, 1).all() and (df["psnr"] > 0).all()
    # the store's derived views hold the invariant on real runs
    worst = rb.worst_case_curve(df).set_index("eps_stated")["score"]
    for eps, g in rb.attack_curves(df).groupby("eps_stated"):
        assert (worst[eps] <= g["score"] + 1e-12).all()
    assert (out / "results.csv").is_file() and len(pd.read_csv(out / "results.csv")) == len(df)
    with ResultStore(out / "results.sqlite") as store:
        assert len(store.checks_dataframe()) == 3
        assert store.models()["tiny"]["classes"] == ["background", "class1", "class2"]
    assert 1 <= len(list((out / "examples").glob("*.npz"))) <= 2
    nii = out / "adversarial" / "tiny" / "pgd" / "eps8" / "phantom_002.nii.gz"
    src = nib.load(assets["datalist"].parent / "imagesTs" / "phantom_002.nii.gz")
    adv = nib.load(nii)
    assert np.allclose(adv.affine, src.affine) and adv.get_data_dtype() == np.float32
    assert 0 < np.abs(adv.get_fdata() - src.get_fdata()).max() <= df["linf_raw"].max() + 1e-3
    assert (nii.parent / "manifest.json").is_file()
    # a second call finds every row done and changes nothing
    before = runs(out)
    run_grid(load_config(tmp_path / "grid.yaml"), progress=False)
    pd.testing.assert_frame_equal(runs(out), before)


def test_classification_grid_and_its_report(tmp_path: Path) -> None:
    from medrobust.data.io import write_png
    from medrobust.data.phantoms import phantom_classification
    from medrobust.report import write_report

    images, labels = phantom_classification((32, 32), num_classes=2, seed=1, batch=4)
    for i, (img, k) in enumerate(zip(images, labels)):
        write_png(tmp_path / "data" / "test" / ("healthy", "lesion")[int(k)] / f"c{i}.png", (img[0] * 255).clamp(0, 255))
    torch.manual_seed(0)
    net = build_model("resnet18", spatial_dims=2, in_channels=1, out_channels=2)
    ckpt = save_checkpoint(tmp_path / "ckpt", net, classes=["healthy", "lesion"])
    cfg = {"models": [{"name": "resnet", "checkpoint": str(ckpt)}],
           "data": {"datalist": str(tmp_path / "data"), "split": "test"},
           "perturbations": [{"attack": "pgd", "eps": [4, 16], "eps_unit": "1/255", "options": {"steps": 3}}],
           "out": str(tmp_path / "results"), "examples": 1}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    out = run_grid(tmp_path / "grid.yaml", progress=False)
    df = runs(out)
    assert len(df) == 2 * 4 and set(df["task"]) == {"classification"} and set(df["score_name"]) == {"accuracy"}
    assert set(df["adv_score"]) <= {0.0, 1.0} and df["adv_prob"].between(0, 1).all()
    assert (df["adv_score"] == (df["adv_pred"] == df["label"])).all()
    assert df["clean_per_class"].isna().all()
    html = write_report(out).read_text(encoding="utf-8")
    assert "the accuracy of resnet" in html and html.count("data:image/png;base64,") >= 1


@pytest.mark.parametrize("breakage, match", [
    ({"perturbations": [{"attack": "pgd", "eps": [2], "options": {"stepz": 3}}]}, r"perturbations\[0\].*stepz"),
    ({"data": {"datalist": "EMPTY", "split": "test"}}, r"data: .*test"),
    ({"models": [{"name": "tiny", "checkpoint": "CORRUPT"}]}, r"models\[0\].checkpoint"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path: Path, assets: dict[str, Path], breakage: dict,
                                                    match: str) -> None:
    path = grid_yaml(tmp_path, assets)
    cfg = {**yaml.safe_load(path.read_text(encoding="utf-8")), **breakage}
    if cfg["data"].get("datalist") == "EMPTY":
        (tmp_path / "empty.json").write_text('{"labels": {"0": "background"}, "training": [], "test": []}')
        cfg["data"]["datalist"] = str(tmp_path / "empty.json")
    if cfg["models"][0]["checkpoint"] == "CORRUPT":
        (tmp_path / "model.json").write_text('{"format": "medrobust-checkpoint/1"}')
        cfg["models"][0]["checkpoint"] = str(tmp_path / "model.json")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(GridConfigError, match=match):
        run_grid(path, progress=False)
    assert not (tmp_path / "results").exists()


def test_store_from_another_config_is_refused(tmp_path: Path, assets: dict[str, Path]) -> None:
    ResultStore(tmp_path / "results" / "results.sqlite", "0123456789abcdef").close()
    with pytest.raises(GridConfigError, match="different grid config"):
        run_grid(grid_yaml(tmp_path, assets), progress=False)
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if not p.name.endswith(("-wal", "-shm"))) == \
        ["results.sqlite"]


def test_run_seed_is_stable_and_distinct() -> None:
    a = run_seed(0, "m", "pgd", 4.0, "c1")
    assert a == run_seed(0, "m", "pgd", 4.0, "c1") and 0 <= a < 2**63
    assert len({a, run_seed(1, "m", "pgd", 4.0, "c1"), run_seed(0, "m", "pgd", 8.0, "c1"),
                run_seed(0, "m", "pgd", 4.0, "c2")}) == 4


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


RUN = "import sys; from medrobust.evaluation.grid import run_grid; run_grid(sys.argv[1], progress=False)"


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_mid_grid_then_resume_gives_the_same_rows(tmp_path: Path, assets: dict[str, Path]) -> None:
    """Kill a runner subprocess mid-grid, restart: one row per run, numbers of an uninterrupted run."""
    killed = grid_yaml(tmp_path / "b", assets, steps=10)
    proc = _python(RUN, str(killed))
    db = tmp_path / "b" / "results" / "results.sqlite"
    deadline = time.monotonic() + 240
    while _count(db) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(db)
    assert 4 <= partial < 18, f"kill landed outside the grid ({partial} rows)"
    run_grid(killed, progress=False)  # the restart
    reference = run_grid(grid_yaml(tmp_path / "a", assets, steps=10), progress=False)
    a, b = runs(reference), runs(tmp_path / "b" / "results")
    assert len(b) == 18 and not b.duplicated(["perturbation", "eps_stated", "case_id"]).any()
    pd.testing.assert_frame_equal(a, b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_shard_cases_and_rank0_merges(tmp_path: Path, assets: dict[str, Path]) -> None:
    single = run_grid(grid_yaml(tmp_path / "one", assets), progress=False)
    path = grid_yaml(tmp_path / "two", assets)
    port = str(_free_port())
    procs = [_python(RUN, str(path), env={"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    out = tmp_path / "two" / "results"
    assert not list(out.glob("results.rank*"))
    pd.testing.assert_frame_equal(runs(single), runs(out), check_exact=False, rtol=1e-5)
