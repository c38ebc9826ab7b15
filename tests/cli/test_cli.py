"""The command line end to end on a tiny phantom Decathlon set: train, predict, attack, and
bad input that must exit 2 without writing output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medrobust.cli import main
from medrobust.data.phantoms import build_phantom_segmentation
from medrobust.evaluation.store import ResultStore

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = build_phantom_segmentation(root / "data", shape=(16, 16, 16), n_train=4, n_val=2, n_test=2) / "dataset.json"
    run = root / "run"
    code = main(["train", "--data", str(data), "--model", "unet", "--out", str(run), "--epochs", "3",
                 "--lr", "0.01", "--model-kwargs", TINY_UNET])
    assert code == 0
    return data, run / "model.json"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("train", "predict", "attack", "evaluate", "report", "demo"):
        assert command in text


def test_train_writes_a_checkpoint_chosen_on_validation(trained: tuple[Path, Path]) -> None:
    _, checkpoint = trained
    meta = json.loads(checkpoint.read_text(encoding="utf-8"))
    assert meta["architecture"] == "unet" and len(meta["classes"]) == 3
    assert (checkpoint.parent / "model.safetensors").exists() and (checkpoint.parent / "history.csv").exists()
    assert meta["extra"]["normalization"] == "zscore"


def test_train_selects_on_robust_validation(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = trained
    run = tmp_path / "robust"
    assert main(["train", "--data", str(data), "--model", "unet", "--out", str(run), "--epochs", "2", "--lr", "0.01",
                 "--model-kwargs", TINY_UNET, "--select", "mean", "--select-eps", "8", "--select-steps", "2"]) == 0
    header, *rows = [line.split(",") for line in (run / "history.csv").read_text(encoding="utf-8").splitlines()]
    clean, robust, score = (header.index(k) for k in ("val_clean_score", "val_robust_score", "val_score"))
    for row in rows:
        assert float(row[score]) == pytest.approx((float(row[clean]) + float(row[robust])) / 2)
    config = json.loads((run / "model.json").read_text(encoding="utf-8"))["extra"]["train_config"]
    assert config["select"] == "mean" and config["select_attack"] == {"attack": "pgd", "eps": 8.0,
                                                                      "eps_unit": "1/255", "steps": 2}


@pytest.mark.parametrize("flag, value, expect", [
    ("--select", "best", "--select"),
    ("--select-eps-unit", "mm", "--select-eps-unit: Input should be"),
    ("--select-attack", "nope", "--select-attack: unknown attack"),
    ("--select-eps", "-2", "--select-eps: Input should be greater than 0"),
])
def test_bad_selection_arguments_exit_2_and_write_nothing(trained: tuple[Path, Path], tmp_path: Path, flag: str,
                                                          value: str, expect: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = trained
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--select", "robust", flag, value]) == 2
    assert expect in capsys.readouterr().err
    assert not run.exists()


def test_predict_writes_labels_with_the_source_affine(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, checkpoint = trained
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "pred")]) == 0
    preds = sorted((tmp_path / "pred").glob("*_pred.nii.gz"))
    assert len(preds) == 2
    items = json.loads(data.read_text(encoding="utf-8"))["test"]
    source = nib.load(str(data.parent / items[0]["image"]))
    pred = nib.load(str(preds[0]))
    assert np.allclose(pred.affine, source.affine) and pred.shape == source.shape
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_attack_writes_adversarial_images_and_manifest(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, checkpoint = trained
    out = tmp_path / "adv"
    assert main(["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                 "--attack", "pgd", "--eps", "8", "--eps-unit", "1/255", "--steps", "3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["attack"] == "pgd" and len(manifest["cases"]) == 2
    case = manifest["cases"][0]
    assert case["linf_model"] > 0 and case["linf_raw"] > 0
    adv = nib.load(str(out / case["image"]))
    source = nib.load(case["source"])
    assert adv.get_data_dtype() == np.float32 and np.allclose(adv.affine, source.affine)
    delta = np.asarray(adv.dataobj) - np.asarray(source.dataobj)
    assert np.abs(delta).max() == pytest.approx(case["linf_raw"], rel=1e-3)
    assert case["score_name"] == "dice_mean" and case["adv_score"] <= case["clean_score"] + 1e-6
    with ResultStore(out / "results.sqlite") as store:  # the same rows as the grid writes
        rows = store.to_dataframe()
    assert sorted(rows["case_id"]) == sorted(c["id"] for c in manifest["cases"])
    assert rows["linf_raw"].tolist() == pytest.approx([c["linf_raw"] for c in manifest["cases"]])


def _exit_code_and_nothing_written(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    assert not out.exists() or not any(out.iterdir())
    return capsys.readouterr().err


@pytest.mark.parametrize("flag,value,expect", [("--eps", "-1", "eps"), ("--steps", "0", "steps"),
                                               ("--attack", "nope", "--attack"), ("--eps-unit", "mm", "unit")])
def test_bad_attack_arguments_exit_2(trained: tuple[Path, Path], tmp_path: Path, flag: str, value: str, expect: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data, checkpoint = trained
    argv = ["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "adv"),
            "--steps", "2", flag, value]
    assert expect in _exit_code_and_nothing_written(argv, tmp_path / "adv", capsys)


def test_corrupt_nifti_is_named_and_exits_2(trained: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data, checkpoint = trained
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    victim = copy / json.loads(data.read_text(encoding="utf-8"))["test"][0]["image"]
    victim.write_bytes(victim.read_bytes()[:100])
    err = _exit_code_and_nothing_written(["predict", "--checkpoint", str(checkpoint), "--data",
                                          str(copy / "dataset.json"), "--out", str(tmp_path / "pred")],
                                         tmp_path / "pred", capsys)
    assert victim.name in err


def test_checkpoint_of_another_architecture_exits_2(trained: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data, checkpoint = trained
    fake = tmp_path / "ckpt"
    shutil.copytree(checkpoint.parent, fake)
    meta = json.loads((fake / "model.json").read_text(encoding="utf-8"))
    meta["kwargs"]["channels"] = [8, 16]
    (fake / "model.json").write_text(json.dumps(meta))
    err = _exit_code_and_nothing_written(["predict", "--checkpoint", str(fake / "model.json"), "--data", str(data),
                                          "--out", str(tmp_path / "pred")], tmp_path / "pred", capsys)
    assert "model.json" in err or "safetensors" in err
