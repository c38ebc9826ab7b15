"""Items 12, 13, 16 and 19: bad options and failing commands give one plain line naming the
option or file, exit code 2, and write nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.cli import main
from medrobust.evaluation.store import ResultStore
from tests.reliability.conftest import MakeData, write_grid

TINY_UNET = '{"channels": [4, 8], "strides": [2], "num_res_units": 0}'
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")


def _case(i: int = 0) -> dict[str, str]:
    return {"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz"}


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("command", ["predict", "train", "evaluate"])
def test_out_that_is_a_file(tmp_path: Path, make_data: MakeData, checkpoint: Path, command: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([_case()])
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    argv = {"predict": ["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)],
            "train": ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--model-kwargs", TINY_UNET],
            "evaluate": ["evaluate", str(write_grid(tmp_path / "g", checkpoint, data, out=str(out)))]}[command]
    assert main(argv) == 2
    err = _error(capsys)
    assert ("out: " if command == "evaluate" else "--out: ") in err and f"{out}" in err and "is a file" in err
    assert out.read_text(encoding="utf-8") == "keep me"


@no_cuda
def test_cuda_without_cuda(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([_case()])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "--device: 'cuda'" in _error(capsys)
    grid = write_grid(tmp_path / "g", checkpoint, data, device="cuda")
    assert main(["evaluate", str(grid)]) == 2
    assert f"{grid}: device: 'cuda'" in _error(capsys)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu", "--amp", "fp16"]) == 2
    assert "--amp: fp16 needs a CUDA device" in _error(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "g" / "results").exists()


@pytest.mark.parametrize("name", ["[/x]", "study[v2]"])
def test_paths_are_printed_verbatim(tmp_path: Path, make_data: MakeData, checkpoint: Path, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([_case()])
    missing = tmp_path / name / "model.json"
    assert main(["predict", "--checkpoint", str(missing), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: checkpoint file not found" in _error(capsys)
    out = tmp_path / name / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out


def test_an_unexpected_failure_is_one_line_with_traceback_behind_debug(tmp_path: Path, make_data: MakeData,
                                                                        checkpoint: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def fails_inside_the_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Sizes of tensors must match")

    monkeypatch.setattr("medrobust.cli.predict.infer", fails_inside_the_network)
    data = make_data([_case()])
    argv = ["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = _error(capsys)
    assert err.startswith("error: predict failed: RuntimeError") and "--debug" in err
    assert main([*argv, "--debug"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expect", [
    (["--overlap", "1.5"], "--overlap: must be in [0, 1)"),
    (["--step-size", "-1"], "--step-size: step_size must be >= 0"),
    (["--eps-unit", "HU"], "--eps-unit: eps in 'HU'"),
])
def test_attack_errors_name_the_flag(tmp_path: Path, make_data: MakeData, checkpoint: Path, flags: list[str],
                                     expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([_case()])
    out = tmp_path / "adv"
    assert main(["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--steps", "1", "--out", str(out),
                 *flags]) == 2
    assert expect in _error(capsys)
    assert not out.exists()


def test_report_with_mathtext_in_a_model_name(tmp_path: Path) -> None:
    name = "$\\foo{$"
    run = {"config_hash": "h", "model": name, "perturbation": "pgd", "kind": "attack", "attack": "pgd",
           "norm": "linf", "eps_unit": "1/255", "case_id": "c1", "task": "segmentation", "score_name": "dice",
           "clean_score": 0.9}
    with ResultStore(tmp_path / "results.sqlite", "h", json.dumps({"examples": 0})) as store:
        store.set_model(name, "segmentation", ["background", "a"])
        for eps, adv in ((2.0, 0.7), (4.0, 0.5)):
            store.add_run({**run, "eps_stated": eps, "adv_score": adv})
    assert main(["report", str(tmp_path)]) == 0
    assert name in (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("flags, expect", [
    (["--roi-size", "16,0,16"], "--roi-size"),
    (["--roi-size", "16,16"], "--roi-size: 16x16 has 2 sizes, the volumes have 3 axes"),
    (["--patch-size", "16,-2,16"], "--patch-size"),
])
def test_train_size_errors_name_the_flag(tmp_path: Path, make_data: MakeData, flags: list[str], expect: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([_case(i) for i in range(3)])
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "unet", "--model-kwargs", TINY_UNET, "--epochs", "1",
                 "--out", str(out), *flags]) == 2
    assert expect in _error(capsys)
    assert not out.exists()
