"""Items 11 and 18: a 2-channel image for a 1-channel model is named before work; a killed attack
resumes without --force; crashes leave no empty folders; a killed corrupt's staging folder is
removed by the next run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medrobust.cli import main
from medrobust.data.io import write_nifti
from medrobust.evaluation.store import ResultStore
from tests.reliability.conftest import AFFINE, SHAPE, MakeData, write_grid

ROOT = Path(__file__).parents[2]
# Runs `medrobust attack` and dies like SIGKILL (no cleanup) while writing the second case's files.
KILLED_ATTACK = """
import os, sys
import medrobust.cli.attack as attack
calls = []
real = attack.save_adversarial
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os._exit(9)
    return real(*args, **kwargs)
attack.save_adversarial = dying
from medrobust.cli import main
main(sys.argv[1:])
"""


def _cases(n: int) -> list[dict[str, object]]:
    return [{"image": f"imagesTs/c{i}.nii.gz", "label": f"labelsTs/c{i}.nii.gz"} for i in range(n)]


def _attack_args(checkpoint: Path, data: Path, out: Path) -> list[str]:
    return ["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--attack", "fgsm", "--out", str(out)]


@pytest.mark.parametrize("command", ["predict", "attack", "evaluate"])
def test_two_channel_image_for_a_one_channel_model_is_named(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                                             command: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(_cases(2))
    image = data.parent / "imagesTs" / "c1.nii.gz"
    write_nifti(image, np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32), AFFINE)
    out = tmp_path / "out"
    argv = {"predict": ["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)],
            "attack": _attack_args(checkpoint, data, out),
            "evaluate": ["evaluate", str(write_grid(tmp_path / "grid", checkpoint, data, out=str(out))), "--no-report"]}
    assert main(argv[command]) == 2
    err = capsys.readouterr().err
    assert f"image {image} has 2 channel(s) but the model takes 1" in err and "Traceback" not in err
    assert not out.exists()


def test_killed_attack_resumes_without_force(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data, out = make_data(_cases(3)), tmp_path / "adv"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    killed = subprocess.run([sys.executable, "-c", KILLED_ATTACK, *_attack_args(checkpoint, data, out)], env=env,
                            capture_output=True, timeout=300)
    assert killed.returncode == 9
    with ResultStore(out / "results.sqlite") as store:
        assert store.count() == 1
    assert main(_attack_args(checkpoint, data, out)) == 0
    assert "(1 done before, resumed)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(c["id"] for c in manifest["cases"]) == ["c0", "c1", "c2"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
    with ResultStore(out / "results.sqlite") as store:
        assert store.count() == 3


@pytest.mark.parametrize("command, crashing", [("predict", "medrobust.cli.predict.infer"),
                                               ("attack", "medrobust.cli.attack.evaluate_run")])
def test_crash_on_the_first_case_leaves_no_empty_folder(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                                        monkeypatch: pytest.MonkeyPatch, command: str,
                                                        crashing: str) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(crashing, crash)
    data, out = make_data(_cases(1)), tmp_path / "new" / "out"
    argv = (["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
            if command == "predict" else _attack_args(checkpoint, data, out))
    assert main(argv) == 2
    assert not (tmp_path / "new").exists()


def test_next_corrupt_removes_stale_staging_folders(tmp_path: Path, make_data: MakeData) -> None:
    data = make_data(_cases(1))
    stale = [tmp_path / ".tmp-corrupt-0a1b2c3d4e5f", tmp_path / ".tmp-corrupt-999999999-0a1b2c3d4e5f"]
    live = tmp_path / f".tmp-corrupt-{os.getpid()}-0a1b2c3d4e5f"
    for folder in (*stale, live):
        (folder / "imagesTs").mkdir(parents=True)
        (folder / "imagesTs" / "half.nii.gz").write_bytes(b"\x1f\x8b")
    assert main(["corrupt", "--data", str(data), "--corruptions", "noise", "--severities", "1",
                 "--out", str(tmp_path / "corrupted")]) == 0
    assert not any(p.exists() for p in stale) and live.is_dir()
    assert (tmp_path / "corrupted" / "dataset.json").is_file()
