"""``medrobust corrupt``: a Decathlon folder that loads back with the source affines; bad input exits 2."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.cli import main
from medrobust.data.datalists import save_decathlon
from medrobust.data.phantoms import phantom_segmentation
from medrobust.data.sources import open_split


def _affine() -> np.ndarray:
    """Oblique and anisotropic: 30 degrees about z, 1 x 1.2 x 3 mm voxels, shifted origin."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, 1.2, 3.0])
    aff[:3, 3] = [-20.0, 14.0, 7.5]
    return aff


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image, label = phantom_segmentation((16, 16, 8), seed=5, batch=2)
    cases = [{"id": f"case{i}", "image": (300 * image[i, 0] - 100).numpy(), "label": label[i, 0].numpy()}
             for i in range(2)]
    root = tmp_path_factory.mktemp("source")
    return save_decathlon(root, {"training": cases[:1], "test": cases}, ["background", "a", "b"], _affine(),
                          name="phantom", description="test")


def run(source: Path, out: Path, *extra: str) -> int:
    return main(["corrupt", "--data", str(source), "--split", "test", "--corruptions", "motion,noise",
                 "--severities", "1,3", "--out", str(out), *extra])


def test_corrupted_folder_loads_back_with_the_source_affines(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "corrupted"
    assert run(source, out) == 0
    split = open_split(out / "dataset.json", "test", normalization="none")
    ids = [split.dataset[i]["id"] for i in range(len(split.dataset))]
    assert sorted(ids) == sorted(f"case{c}__{n}_s{s}" for c in (0, 1) for n in ("motion", "noise") for s in (1, 3))
    assert split.classes == ["background", "a", "b"]
    source_split = open_split(source, "test", normalization="none")
    clean = {source_split.dataset[i]["id"]: source_split.dataset[i] for i in range(2)}
    for i in range(len(split.dataset)):
        item = split.dataset[i]
        ref = clean[item["id"].split("__")[0]]
        assert np.allclose(item["meta"]["affine"].numpy(), _affine(), atol=1e-5)
        assert torch.equal(item["label"], ref["label"])
        assert not torch.allclose(item["image"], ref["image"])
        assert float((item["image"] - ref["image"]).abs().max()) < 300  # raw units of the source
    first = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["test"][0]
    assert nib.load(str(out / first["image"])).get_data_dtype() == np.float32
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["cases"]) == set(ids) and manifest["seed"] == 0
    entry = manifest["cases"]["case1__motion_s3"]
    assert entry["severity"] == 3 and entry["params"]["through_plane_axis"] == 2
    assert "rotation_deg" in entry["params"]["drawn"] and entry["params"]["derived_seed"] > 0
    assert len(list((out / "labelsTs").iterdir())) == 2  # labels copied once per case
    assert not list(tmp_path.glob(".tmp-corrupt-*"))


def test_the_same_command_writes_the_same_images(source: Path, tmp_path: Path) -> None:
    assert run(source, tmp_path / "a", "--seed", "4") == 0 and run(source, tmp_path / "b", "--seed", "4") == 0
    assert run(source, tmp_path / "c", "--seed", "5") == 0
    name = "imagesTs/case0__noise_s3.nii.gz"
    a, b, c = (np.asarray(nib.load(str(tmp_path / d / name)).dataobj) for d in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(("args", "word"), [
    (["--corruptions", "motion,wobble"], "--corruptions"), (["--severities", "0,3"], "--severities"),
    (["--severities", "1.5"], "--severities"), (["--severities", "6"], "--severities"),
    (["--window", "250,-175"], "--window"), (["--split", "holdout"], "holdout"),
])
def test_bad_arguments_exit_2_and_write_nothing(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], word: str) -> None:
    out = tmp_path / "out"
    base = ["corrupt", "--data", str(source), "--corruptions", "noise", "--severities", "1", "--out", str(out)]
    assert main(base + args) == 2
    assert word in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tmp-corrupt-*"))


def test_missing_data_and_non_empty_out_exit_2(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "nope.json", tmp_path / "o1") == 2
    assert "--data" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert run(source, busy) == 2
    assert "--out" in capsys.readouterr().err and sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_a_truncated_volume_leaves_no_output(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The header reads, the data does not: the failure comes mid-run and the staging folder goes."""
    broken = tmp_path / "broken"
    broken.mkdir()
    doc = json.loads(source.read_text(encoding="utf-8"))
    for sub in ("imagesTs", "labelsTs"):
        (broken / sub).mkdir()
        for f in (source.parent / sub).iterdir():
            (broken / sub / f.name).write_bytes(f.read_bytes())
    victim = broken / doc["test"][1]["image"]
    victim.write_bytes(victim.read_bytes()[:400])
    (broken / "dataset.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert run(broken / "dataset.json", out) == 2
    assert victim.name in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tmp-corrupt-*"))


def test_acdc_c_preset_writes_one_draw_per_case_and_corruption(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "acdc-c"
    assert main(["corrupt", "--data", str(source), "--split", "test", "--preset", "acdc-c", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    expected = {f"case{c}__{n}_acdc-c" for c in (0, 1) for n in ("motion", "spike", "ghosting", "bias_field")}
    assert set(manifest["cases"]) == expected and manifest["preset"] == "acdc-c"
    spike = manifest["cases"]["case0__spike_acdc-c"]
    assert spike["severity"] is None and 1 <= spike["params"]["drawn"]["intensity"] <= 3
    assert main(["corrupt", "--data", str(source), "--preset", "acdc", "--out", str(tmp_path / "bad")]) == 2
