"""Items 4, 7 and 19 (labels key): bad labels and label mappings stop before anything is written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medrobust.cli import main
from medrobust.data.phantoms import phantom_segmentation
from tests.reliability.conftest import SHAPE, MakeData, files_outside


def _label(kind: str) -> dict[str, object]:
    """A case whose label is broken in one way."""
    case: dict[str, object] = {"image": "imagesTs/c1.nii.gz", "label": "labelsTs/c1.nii.gz"}
    good = phantom_segmentation(SHAPE, seed=1)[1][0, 0].numpy()
    if kind == "out of range":
        case["label_array"] = np.where(good > 0, 7, 0)
    elif kind == "mis-shaped":
        case["label_array"] = good[:, :, :4]
    elif kind == "mis-registered":
        case["label_affine"] = np.diag([2.0, 2.0, 6.0, 1.0])
    return case


@pytest.mark.parametrize("kind, expect", [
    ("out of range", "label values [7] outside"),
    ("mis-shaped", "differs from image"),
    ("mis-registered", "affine differs"),
    ("broken", "cannot read"),
])
def test_corrupt_checks_labels_before_writing(tmp_path: Path, make_data: MakeData, kind: str, expect: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([{"image": "imagesTs/c0.nii.gz", "label": "labelsTs/c0.nii.gz"}, _label(kind)])
    label = data.parent / "labelsTs" / "c1.nii.gz"
    if kind == "broken":
        label.write_bytes(label.read_bytes()[:60])  # truncated gzip
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "corrupted"
    assert main(["corrupt", "--data", str(data), "--corruptions", "noise", "--severities", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(label) in err and expect in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and files_outside(tmp_path, out, before) == []


@pytest.mark.parametrize("labels, expect", [
    ({"0": "background", "1": "a", "2": "b", "4": "c"}, "missing [3]"),
    ({"0": "background", "x": "a"}, "'labels' key 'x' is not a class index"),
])
def test_labels_mapping_with_a_gap_or_a_name_is_refused(tmp_path: Path, make_data: MakeData, checkpoint: Path,
                                                        labels: dict[str, str], expect: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data([{"image": "imagesTs/c0.nii.gz", "label": "labelsTs/c0.nii.gz"}], labels=labels)
    out = tmp_path / "pred"
    for argv in (["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)],
                 ["corrupt", "--data", str(data), "--corruptions", "noise", "--severities", "1", "--out", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{data}: 'labels'" in err and expect in err
        assert not out.exists()


def test_output_channels_that_do_not_match_the_classes_are_explained() -> None:
    import torch

    from medrobust.metrics import dice_per_class

    with pytest.raises(ValueError, match=r"model's output.*3 classes \(model.json `classes`\)"):
        dice_per_class(torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.long), 3)
