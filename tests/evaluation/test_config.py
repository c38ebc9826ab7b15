"""Grid config: YAML validation, errors naming the key path, path resolution, hashing."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.attacks import FGSM, attack_names, register_attack
from medrobust.evaluation.config import GridConfigError, load_config, parse_config
from medrobust.evaluation.specs import AttackSpec, CorruptionSpec


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.json").write_text('{"architecture": "unet"}')
    (tmp_path / "dataset.json").write_text("{}")
    return tmp_path


def good() -> dict:
    return {"models": [{"name": "unet", "checkpoint": "ckpt/model.json"}],
            "data": {"datalist": "dataset.json", "split": "test", "max_cases": 2},
            "perturbations": [{"attack": "pgd", "eps": [2, 4], "eps_unit": "1/255", "options": {"steps": 5}},
                              {"attack": "square", "eps": [4], "eps_unit": "1/255"}],
            "out": "results"}


def write(folder: Path, data: dict) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_yaml_resolves_paths_against_its_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    cfg = load_config(write(folder, good()))
    assert cfg.models[0].checkpoint == (folder / "ckpt" / "model.json").resolve()
    assert cfg.data.datalist == (folder / "dataset.json").resolve()
    assert cfg.out == (folder / "results").resolve()
    pgd = cfg.perturbations[0]
    assert isinstance(pgd, AttackSpec) and pgd.eps == [2.0, 4.0] and pgd.label == "pgd"
    assert cfg.roi_size is None and cfg.overlap == 0.25 and cfg.examples == 3


@pytest.mark.parametrize("patch, key, allowed", [
    ({"perturbations": [{"attack": "pgdd", "eps": [1]}]}, "perturbations[0].attack", "allowed: fgsm"),
    ({"perturbations": [{"attack": "pgd", "eps": [1, -2]}]}, "perturbations[0].eps[1]", "greater than or equal to 0"),
    ({"perturbations": [{"attack": "pgd", "eps": [1], "eps_unit": "mm"}]}, "perturbations[0].eps_unit", "'HU'"),
    ({"perturbations": [{"attack": "pgd", "eps": [1], "norm": "l1"}]}, "perturbations[0].norm", "'l2'"),
    ({"perturbations": [{"attack": "pgd", "eps": [1], "steps": 3}]}, "perturbations[0].steps", "allowed keys here: attack"),
    ({"perturbations": [{"attack": "pgd", "eps": [1], "options": {"eps": 3}}]}, "perturbations[0].options", "beside `attack:`"),
    ({"perturbations": [{"attack": "pgd", "eps": []}]}, "perturbations[0].eps", "at least 1"),
    ({"perturbations": [{"eps": [1]}]}, "perturbations[0]", "`attack:`, `corruption:` or `certify:`"),
    ({"perturbations": [{"corruption": "ghosting", "severities": [6]}]}, "perturbations[0].severities[0]", "5"),
    ({"perturbations": [{"attack": "pgd", "eps": [1]}, {"attack": "pgd", "eps": [2]}]}, "perturbations", "set `name:`"),
    ({"models": [{"name": "unet", "checkpoint": "missing/model.json"}]}, "models[0].checkpoint", "not found"),
    ({"models": [{"name": "unet"}]}, "models[0]", "give exactly one model source"),
    ({"data": {"datalist": "dataset.json", "demo": "segmentation"}}, "data", "exactly one"),
    ({"data": {"demo": "mnist"}}, "data.demo", "'segmentation' or 'classification'"),
    ({"metrics": ["dice", "iou"]}, "metrics[1]", "'hd95'"),
    ({"seeed": 3}, "seeed", "allowed keys here: models, data"),
    ({"overlap": 1.5}, "overlap", "less than 1"),
])
def test_errors_name_the_key_and_allowed_values(folder: Path, patch: dict, key: str, allowed: str) -> None:
    path = write(folder, {**good(), **patch})
    with pytest.raises(GridConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"{key}:" in msg and allowed in msg and str(path) in msg


def test_several_errors_in_one_message(folder: Path) -> None:
    bad = {**good(), "seed": "x", "perturbations": [{"attack": "nope", "eps": [-1]}]}
    with pytest.raises(GridConfigError) as info:
        parse_config(bad, folder)
    lines = str(info.value).splitlines()
    assert {"seed:", "perturbations[0].attack:", "perturbations[0].eps[0]:"} <= {ln.split()[0] for ln in lines[1:]}


def test_not_a_mapping_and_bad_yaml(folder: Path) -> None:
    with pytest.raises(GridConfigError, match="top level must be a mapping"):
        parse_config(["a"], folder)  # type: ignore[arg-type]
    (folder / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(GridConfigError, match="not valid YAML"):
        load_config(folder / "bad.yaml")
    with pytest.raises(GridConfigError, match="not found"):
        load_config(folder / "absent.yaml")


def test_an_attack_registered_after_import_is_accepted(folder: Path) -> None:
    name = "test-config-linf-only"
    register_attack(name, norms=("linf",))(FGSM)  # the same object on a rerun: no duplicate error
    assert name in attack_names()
    entry = {"attack": name, "eps": [2], "eps_unit": "1/255", "options": {"steps": 1}}
    cfg = load_config(write(folder, {**good(), "perturbations": [entry]}))
    (spec,) = cfg.perturbations
    assert isinstance(spec, AttackSpec) and spec.attack == name and spec.label == name
    assert AttackSpec(attack=name.upper(), eps=[1]).attack == name  # case-insensitive, like get_attack
    with pytest.raises(GridConfigError, match=r"perturbations\[0\].*takes a budget of norm 'linf', got 'l2'$"):
        parse_config({**good(), "perturbations": [{**entry, "norm": "l2"}]}, folder)


def test_norms_come_from_the_attack_registry(folder: Path) -> None:
    square_l2 = {"attack": "square", "eps": [4], "eps_unit": "1/255", "norm": "l2"}
    with pytest.raises(GridConfigError, match="norm 'linf'"):
        parse_config({**good(), "perturbations": [square_l2]}, folder)
    vafa = {"attack": "vafa2d", "eps": [8], "eps_unit": "1/255", "norm": "dct"}
    assert parse_config({**good(), "perturbations": [vafa]}, folder).perturbations[0].label == "vafa2d"
    with pytest.raises(GridConfigError, match="norm 'dct'"):
        parse_config({**good(), "perturbations": [{**vafa, "norm": "linf"}]}, folder)


def test_corruption_entries_fit_the_schema(folder: Path) -> None:
    cfg = parse_config({**good(), "perturbations": [{"corruption": "ghosting", "severities": [1, 3]}]}, folder)
    (c,) = cfg.perturbations
    assert isinstance(c, CorruptionSpec) and c.levels == [1.0, 3.0] and c.label == "ghosting"


def test_config_hash_ignores_output_fields_only(folder: Path) -> None:
    base = parse_config(good(), folder).config_hash
    assert parse_config({**good(), "out": "elsewhere", "examples": 7}, folder).config_hash == base
    assert parse_config({**good(), "seed": 1}, folder).config_hash != base
    (folder / "ckpt" / "model.safetensors").write_bytes(b"new weights")
    assert parse_config(good(), folder).config_hash != base
