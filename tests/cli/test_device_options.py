"""Issue 17, item 3: ``--device`` on every command that runs a model, the grid's ``device:`` key
(the flag overrides it), one rule for device names (torchrun: ``cuda:LOCAL_RANK``), NCCL for a
CUDA grid under torchrun, and ``--amp``/``--batch-size``/``--sw-batch-size`` on attack and evaluate."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medrobust.cli import main
from medrobust.evaluation.core import AMP_NOTE
from medrobust.evaluation.grid import world
from medrobust.evaluation.store import ResultStore
from medrobust.models.devices import resolve_device
from tests.evaluation.assets import tiny_grid_assets

MODEL_COMMANDS = ["train", "pretrain-natural", "tune", "certify", "attack", "evaluate", "predict", "explain", "demo"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_grid_assets(tmp_path_factory.mktemp("device-assets"), n_test=2)


def _grid(folder: Path, assets: dict[str, Path], **extra: Any) -> Path:
    cfg = {"models": [{"name": "tiny", "checkpoint": str(assets["checkpoint"])}],
           "data": {"datalist": str(assets["datalist"]), "split": "test"},
           "perturbations": [{"attack": "pgd", "eps": [4], "eps_unit": "1/255", "options": {"steps": 2}}],
           "out": str(folder / "results"), "examples": 0, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "grid.yaml"


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_takes_device(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--device" in text
    if command in ("attack", "evaluate"):
        assert all(flag in text for flag in ("--amp", "--batch-size", "--sw-batch-size"))


@no_cuda
@pytest.mark.parametrize("command", ["attack", "evaluate", "predict", "explain", "demo"])
def test_device_cuda_without_cuda_exits_2_naming_the_flag(command: str, tmp_path: Path, assets: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    given = ["--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]), "--out", str(out)]
    argv = {"attack": ["attack", *given], "predict": ["predict", *given], "explain": ["explain", *given],
            "demo": ["demo", "--out", str(out)],
            "evaluate": ["evaluate", str(_grid(tmp_path / "g", assets, out=str(out)))]}[command]
    assert main([*argv, "--device", "cuda"]) == 2
    err = _error(capsys)
    assert err.startswith("error: --device: 'cuda'") and "no usable CUDA" in err
    assert not out.exists() and not list(tmp_path.rglob("*.sqlite"))


@no_cuda
def test_grid_device_key_is_named_and_the_flag_overrides_it(tmp_path: Path, assets: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid(tmp_path / "g", assets, device="cuda")
    assert main(["evaluate", str(grid), "--no-report", "--no-progress"]) == 2
    assert f"{grid}: device: 'cuda' asked for, but this machine has no usable CUDA" in _error(capsys)
    assert not (tmp_path / "g" / "results").exists()
    bad = _grid(tmp_path / "bad", assets, device="gpu")
    assert main(["evaluate", str(bad), "--no-report", "--no-progress"]) == 2
    assert f"{bad}: device: 'gpu' is not a device; allowed: auto, cpu" in _error(capsys)
    assert main(["evaluate", str(grid), "--no-report", "--no-progress", "--device", "cpu"]) == 0
    with ResultStore(tmp_path / "g" / "results" / "results.sqlite") as store:
        assert store.count() == 2
        assert json.loads(store.meta()["config_json"])["device"] == "cpu"


def test_bad_amp_for_attacks_exits_2_and_writes_nothing(tmp_path: Path, assets: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adv"
    given = ["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]), "--out",
             str(out), "--device", "cpu"]
    assert main([*given, "--amp", "half"]) == 2
    assert "--amp: attacks take bf16 or none, got 'half'" in _error(capsys)
    grid = _grid(tmp_path / "g", assets)
    assert main(["evaluate", str(grid), "--amp", "fp32"]) == 2
    assert "--amp: attacks take bf16 or none" in _error(capsys)
    assert main([*given, "--batch-size", "0"]) == 2
    assert not out.exists() and not (tmp_path / "g" / "results").exists()


def test_attack_with_amp_and_batching_records_them(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = tmp_path / "adv"
    code = main(["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]),
                 "--attack", "pgd", "--eps", "4", "--steps", "2", "--out", str(out), "--device", "cpu",
                 "--amp", "bf16", "--batch-size", "2", "--sw-batch-size", "2"])
    assert code == 0
    with ResultStore(out / "results.sqlite") as store:
        rows = store.to_dataframe()
    assert len(rows) == 2
    assert all(json.loads(o)["amp"] == "bf16" for o in rows["options_json"])
    assert rows["method"].str.contains(AMP_NOTE, regex=False).all()
    assert (rows["linf_model"] <= rows["eps_model"] + 1e-6).all()
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["options"]["amp"] == "bf16"


def test_evaluate_flags_override_the_grid(tmp_path: Path, assets: dict[str, Path]) -> None:
    grid = _grid(tmp_path / "g", assets, roi_size=[8, 8, 8])
    assert main(["evaluate", str(grid), "--no-report", "--no-progress", "--device", "auto", "--amp", "bf16",
                 "--batch-size", "2", "--sw-batch-size", "4"]) == 0
    with ResultStore(tmp_path / "g" / "results" / "results.sqlite") as store:
        rows = store.to_dataframe()
    assert len(rows) == 2 and all(json.loads(o) == {"steps": 2, "amp": "bf16"} for o in rows["options_json"])


def test_resolve_device_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an index given is kept
    assert resolve_device("cpu") == torch.device("cpu")
    assert current == [torch.device("cuda", 1), torch.device("cuda", 1), torch.device("cuda", 0)]
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        resolve_device("gpu")


@pytest.mark.parametrize(("device", "backend"), [(torch.device("cuda", 1), "nccl"), (torch.device("cpu"), "gloo")])
def test_grid_under_torchrun_uses_nccl_on_cuda(device: torch.device, backend: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    joined: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert world(device) == (1, 2) and joined == [backend]


@pytest.mark.gpu
def test_grid_and_attack_on_cuda_with_bf16(tmp_path: Path, assets: dict[str, Path]) -> None:
    cpu, gpu = _grid(tmp_path / "cpu", assets, device="cpu"), _grid(tmp_path / "gpu", assets, device="cuda")
    assert main(["evaluate", str(cpu), "--no-report", "--no-progress"]) == 0
    assert main(["evaluate", str(gpu), "--no-report", "--no-progress", "--amp", "bf16", "--batch-size", "2"]) == 0
    frames = []
    for folder in (cpu, gpu):
        with ResultStore(folder.parent / "results" / "results.sqlite") as store:
            frames.append(store.to_dataframe().sort_values("case_id").reset_index(drop=True))
    assert (frames[0]["clean_score"] - frames[1]["clean_score"]).abs().max() < 1e-3
    assert (frames[0]["adv_score"] - frames[1]["adv_score"]).abs().max() < 0.1
    assert (frames[1]["linf_model"] <= frames[1]["eps_model"] + 1e-6).all()
    out = tmp_path / "adv"
    assert main(["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]), "--eps", "4",
                 "--steps", "2", "--out", str(out), "--device", "cuda", "--amp", "bf16"]) == 0
