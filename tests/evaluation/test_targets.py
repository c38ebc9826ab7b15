"""Targeted attacks that target: target forms, per-case target labels, success, grid checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from medrobust.attacks import PGD, Attack, register_attack
from medrobust.cli import main
from medrobust.evaluation.config import GridConfigError
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.evaluation.targets import parse_target
from medrobust.units import Budget
from tests.attacks.test_gradient import trained_segmenter
from tests.evaluation.test_grid import assets, grid_yaml  # noqa: F401  (module fixture)

CLASSES = ["background", "class1", "class2"]


@pytest.mark.parametrize("form, kind", [("least_likely", "least_likely"), ("random", "random"),
                                        ("class:2", "class"), ({"class": "class1"}, "class"),
                                        ({"map": {"class1": "background"}}, "map")])
def test_target_forms(form: object, kind: str) -> None:
    assert parse_target(form).kind == kind


@pytest.mark.parametrize("form", ["true_label", "class:", {"map": {}}, {"map": {"a": [1]}}, 3])
def test_bad_target_forms_name_the_key(form: object) -> None:
    with pytest.raises(ValueError, match="^target: .*allowed|^target: map"):
        parse_target(form)


def test_target_labels_per_kind() -> None:
    y = torch.tensor([0, 1, 2, 2])
    logits = torch.tensor([[3.0, -2.0, 0.0], [0.0, 3.0, -1.0], [-1.0, 0.0, 3.0], [0.0, -3.0, 3.0]])
    assert parse_target("least_likely").labels(y, logits, CLASSES, 0, "c").tolist() == [1, 2, 0, 1]
    assert parse_target("class:class2").labels(y, logits, CLASSES, 0, "c").tolist() == [2, 2, 2, 2]
    random = parse_target("random").labels(y, logits, CLASSES, 0, "c")
    assert (random != y).all() and torch.equal(random, parse_target("random").labels(y, logits, CLASSES, 0, "c"))
    seg = torch.tensor([[[0, 1, 2, 1]]])
    mapped = parse_target({"map": {"class1": "background"}}).labels(seg, torch.zeros(1, 3, 4), CLASSES, 0, "c")
    assert mapped.tolist() == [[[0, 0, 2, 0]]]


def test_map_success_counts_only_the_mapped_voxels() -> None:
    target = parse_target({"map": {"class1": "background"}})
    y = torch.tensor([[[0, 1, 1, 2]]])
    goal = target.labels(y, torch.zeros(1, 3, 4), CLASSES, 0, "c")
    pred = torch.nn.functional.one_hot(torch.tensor([[0, 0, 1, 0]]), 3).movedim(-1, 1).float()
    assert target.success(pred, y, goal) == pytest.approx(0.5)  # voxel 1 reached, voxel 2 not; 0 and 3 not asked


@pytest.mark.parametrize("loss", ["ce", "segpgd", "cospgd"])
def test_targeted_attacks_reach_the_target_more_than_the_untargeted_one(loss: str) -> None:
    model, x, y = trained_segmenter()
    target = parse_target({"map": {"class1": "background"}})
    goal = target.labels(y, model(x), CLASSES, 0, "c")
    budget = Budget.linf(0.08, valid_range=(0.0, 1.0))
    with torch.no_grad():
        before = target.success(model(x), y, goal)
    untargeted = PGD(budget, steps=10, loss=loss, seed=0)(model, x, y)
    targeted = PGD(budget, steps=10, loss=loss, targeted=True, seed=0)(model, x, goal)
    with torch.no_grad():
        hit_untargeted, hit_targeted = (target.success(model(v), y, goal) for v in (untargeted, targeted))
    assert hit_targeted > hit_untargeted and hit_targeted > before + 0.2, (before, hit_untargeted, hit_targeted)


def test_targeted_segpgd_pushes_voxels_not_yet_at_the_target_at_step_one() -> None:
    model, x, y = trained_segmenter()
    goal = parse_target({"map": {"class1": "background"}}).labels(y, model(x), CLASSES, 0, "c")
    attack = PGD(Budget.linf(0.08, valid_range=(0.0, 1.0)), steps=4, loss="segpgd", targeted=True)
    x_var = x.clone().requires_grad_(True)
    gain = attack._gain(model(x_var), goal, t=1)
    (grad,) = torch.autograd.grad(gain.sum(), x_var)
    assert grad.abs().sum() > 0, "at t = 1 the voxels still away from the target must get a gradient"


def test_grid_records_target_success_and_the_iterate_rule(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [{"attack": "pgd", "eps": [8], "eps_unit": "1/255", "options": {"steps": 2},
                             "target": {"map": {"class1": "background"}}, "name": "pgd-to-bg"},
                            {"attack": "pgd", "eps": [8], "eps_unit": "1/255", "options": {"steps": 2, "keep": "loss"}}]
    path.write_text(yaml.safe_dump(cfg))
    with ResultStore(run_grid(path, progress=False) / "results.sqlite") as store:
        df = store.to_dataframe()
    targeted, plain = df[df["perturbation"] == "pgd-to-bg"], df[df["perturbation"] == "pgd"]
    assert (targeted["target"] == "map class1 -> background").all() and targeted["target_success"].notna().any()
    assert set(targeted["iterate_rule"]) == {"metric"} and set(plain["iterate_rule"]) == {"loss"}
    assert plain["target_success"].isna().all()


@pytest.mark.parametrize("entry, match", [
    ({"attack": "pgd", "eps": [2], "options": {"targeted": True}}, r"target: options.targeted is true"),
    ({"attack": "pgd", "eps": [2], "target": {"map": {"tumour": "background"}}}, r"target: class tumour"),
    ({"attack": "pgd", "eps": [2], "target": "least_likely"}, r"target: .*is for classification"),
    ({"attack": "cls-only", "eps": [2]}, r"attack: 'cls-only' is for classification models"),
])
def test_grid_rejects_bad_targets_and_attacks_of_another_task(tmp_path: Path, assets: dict[str, Path],  # noqa: F811
                                                              entry: dict, match: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    register_attack("cls-only", task="classification", replace=True)(PGD)
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [entry]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(GridConfigError, match=match):
        run_grid(path, progress=False)
    assert main(["evaluate", str(path)]) == 2
    assert "target" in capsys.readouterr().err or "cls-only" in entry["attack"]
    assert not (tmp_path / "results").exists()


def test_attack_keep_rule_is_validated() -> None:
    with pytest.raises(ValueError, match="keep must be one of metric, loss"):
        Attack(Budget.linf(0.1), keep="best")  # type: ignore[arg-type]


@pytest.mark.parametrize("flags, match", [
    (["--attack", "autoattack"], "--attack: 'autoattack' is for classification"),
    (["--attack", "pgd", "--target", "least_likely"], "--target: 'least_likely' is for classification"),
    (["--attack", "pgd", "--target", "map:tumour"], "--target: give map:FROM=TO"),
    (["--attack", "pgd", "--keep", "best"], "keep must be one of"),
])
def test_cli_attack_refuses_an_attack_or_target_of_another_task(tmp_path: Path, assets: dict[str, Path],  # noqa: F811
                                                                flags: list[str], match: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]),
                 "--eps", "4", "--steps", "2", "--out", str(tmp_path / "out"), *flags])
    assert code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_targeted_attack_records_its_success(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    assert main(["attack", "--checkpoint", str(assets["checkpoint"]), "--data", str(assets["datalist"]),
                 "--eps", "8", "--steps", "3", "--target", "map:class1=background", "--out", str(tmp_path / "out")]) == 0
    with ResultStore(tmp_path / "out" / "results.sqlite") as store:
        df = store.to_dataframe()
    assert (df["target"] == "map class1 -> background").all() and df["target_success"].between(0, 1).all()


def test_per_case_target_label_files(tmp_path: Path, assets: dict[str, Path]) -> None:  # noqa: F811
    import nibabel as nib
    import numpy as np

    from medrobust.data.sources import open_split

    split = open_split(assets["datalist"], "test", normalization="zscore")
    (tmp_path / "targets").mkdir()
    for item in split.dataset:
        label = np.asarray(item["label"][0])
        nib.save(nib.Nifti1Image(np.where(label == 1, 0, label).astype(np.int16), np.eye(4)),
                 str(tmp_path / "targets" / f"{item['id']}.nii.gz"))
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [{"attack": "pgd", "eps": [8], "eps_unit": "1/255", "options": {"steps": 2},
                             "target": {"labels": "targets/{id}.nii.gz"}}]
    path.write_text(yaml.safe_dump(cfg))
    with ResultStore(run_grid(path, progress=False) / "results.sqlite") as store:
        df = store.to_dataframe()
    assert df["target"].str.startswith("labels ").all() and df["target_success"].notna().any()
    cfg["perturbations"][0]["target"] = {"labels": "missing/{id}.nii.gz"}
    cfg["out"] = str(tmp_path / "other")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="target: label file"):
        run_grid(path, progress=False)
