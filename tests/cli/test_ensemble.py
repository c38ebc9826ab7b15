"""``medrobust ensemble``: one checkpoint that predict and attack take; bad member lists exit 2
with nothing written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from medrobust.cli import main
from medrobust.data.io import write_png
from medrobust.models import Ensemble, build_model, load_checkpoint, save_checkpoint

TINY = {"widen_factor": 0.125}



def _member(folder: Path, name: str, classes: list[str], seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_model(name, spatial_dims=2, in_channels=1, out_channels=len(classes),
                      **(TINY if name == "resnet18" else {"init_features": 8, "growth_rate": 4, "block_config": (2, 2)}))
    return save_checkpoint(folder, net, classes=classes, extra={"normalization": "minmax"})


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("members")
    out = {"r18": _member(root / "r18", "resnet18", ["healthy", "lesion"], 0),
           "d121": _member(root / "d121", "densenet121", ["healthy", "lesion"], 1),
           "three": _member(root / "three", "resnet18", ["a", "b", "c"], 2),
           "renamed": _member(root / "renamed", "resnet18", ["healthy", "tumour"], 3)}
    for split, n in (("test", 2),):
        for k, cls in enumerate(["healthy", "lesion"]):
            for j in range(n):
                write_png(root / "data" / split / cls / f"{j}.png", torch.full((32, 32), 40.0 + 100 * k + j))
    out["data"] = root / "data"
    return out


def test_ensemble_checkpoint_is_the_mean_of_its_members(members: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", "--checkpoints", str(members["r18"]), str(members["d121"]), "--out", str(out)]) == 0
    model, info = load_checkpoint(out / "model.json")
    assert isinstance(model, Ensemble) and info.recipe == "ensemble" and info.classes == ["healthy", "lesion"]
    assert [m["name"] for m in info.extra["members"]] == ["r18", "d121"] and info.extra["normalization"] == "minmax"
    x = torch.rand(2, 1, 32, 32)
    parts = [load_checkpoint(members[k])[0] for k in ("r18", "d121")]
    with torch.no_grad():
        torch.testing.assert_close(model(x), (parts[0](x) + parts[1](x)) / 2)


def test_predict_and_attack_take_the_ensemble(members: dict[str, Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    assert main(["ensemble", str(members["r18"].parent), "--checkpoints", str(members["d121"]), "--out", str(ens),
                 "--mode", "mean_probs"]) == 0
    assert main(["predict", "--checkpoint", str(ens / "model.json"), "--data", str(members["data"]), "--split", "test",
                 "--out", str(tmp_path / "pred")]) == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert len(rows) == 4 and {r["prediction"] for r in rows} <= {"healthy", "lesion"}
    assert main(["attack", "--checkpoint", str(ens / "model.json"), "--data", str(members["data"]), "--split", "test",
                 "--steps", "2", "--out", str(tmp_path / "adv")]) == 0
    manifest = json.loads((tmp_path / "adv" / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["cases"]) == 4 and all(c["linf_model"] > 0 for c in manifest["cases"])


@pytest.mark.parametrize("bad, match", [
    ("three", "class count"),
    ("renamed", "class names"),
])
def test_members_that_disagree_exit_2_and_write_nothing(members: dict[str, Path], tmp_path: Path, bad: str,
                                                        match: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", "--checkpoints", str(members["r18"]), str(members[bad]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and str(members["r18"]) in err.replace("\n", "") and bad in err
    assert not out.exists()


def test_one_member_is_not_an_ensemble(members: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ensemble", "--checkpoints", str(members["r18"]), "--out", str(tmp_path / "ens")]) == 2
    assert "at least two" in capsys.readouterr().err and not (tmp_path / "ens").exists()
