"""Certification entries of a grid: rows, certified curves, the check against the L2 attacks, the report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrobust.evaluation.certified_tables import certified_curves, certified_vs_empirical
from medrobust.evaluation.config import GridConfigError
from medrobust.evaluation.grid import run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.report.html import write_report
from tests.evaluation.test_grid import assets, grid_yaml  # noqa: F401  (module fixture)


def test_grid_certifies_and_the_report_draws_it_beside_the_l2_attacks(tmp_path: Path,
                                                                       assets: dict[str, Path]) -> None:  # noqa: F811
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [
        {"certify": "gaussian", "sigma": [0.25], "unit": "model", "n0": 4, "n": 16, "alpha": 0.01,
         "radii": [0.0, 0.5]},
        {"attack": "pgd", "norm": "l2", "eps": [0.5], "eps_unit": "model", "options": {"steps": 2}},
    ]
    path.write_text(yaml.safe_dump(cfg))
    out = run_grid(path, progress=False)
    with ResultStore(out / "results.sqlite") as store:
        df = store.to_dataframe()
    cert = df[df["kind"] == "certification"]
    assert len(cert) == 3 and set(cert["eps_stated"]) == {0.25} and (cert["norm"] == "l2").all()
    details = json.loads(cert["options_json"].iloc[0])
    assert details["radii"] == [0.0, 0.5] and len(details["certified"]) == 2 and details["n"] == 16
    assert (cert["adv_score"] == [json.loads(o)["certified"][0] for o in cert["options_json"]]).all()
    checks = certified_vs_empirical(df)
    assert checks["radius"].tolist() == [0.0, 0.5]  # the clean point (eps 0) and the attack's radius
    html = write_report(out).read_text(encoding="utf-8")
    assert "Certified robustness" in html and "empirical worst case" in html


def test_a_certified_score_above_the_empirical_worst_case_is_flagged() -> None:
    base = {"model": "m", "eps_unit": "model", "case_id": "a", "clean_score": 0.9, "norm": "l2"}
    df = pd.DataFrame([
        {**base, "perturbation": "certify-gaussian", "kind": "certification", "attack": "certify-gaussian",
         "eps_stated": 0.25, "adv_score": 0.8,
         "options_json": json.dumps({"radii": [0.0, 0.5], "certified": [0.8, 0.7], "abstain_rate": 0.0})},
        {**base, "perturbation": "pgd-l2", "kind": "attack", "attack": "pgd", "eps_stated": 0.5, "adv_score": 0.4,
         "options_json": "{}"},
    ])
    assert certified_curves(df)["certified"].tolist() == [0.8, 0.7]
    checks = certified_vs_empirical(df)
    assert checks["violation"].tolist() == [False, True] and checks["empirical"].tolist() == [0.9, 0.4]


@pytest.mark.parametrize("entry, match", [
    ({"certify": "gaussian", "sigma": [0]}, "sigma"),
    ({"certify": "gaussian", "sigma": [0.25], "tau": 0.4}, "tau"),
    ({"certify": "laplace", "sigma": [0.25]}, "certify"),
])
def test_bad_certification_entries_are_named(tmp_path: Path, assets: dict[str, Path],  # noqa: F811
                                             entry: dict, match: str) -> None:
    path = grid_yaml(tmp_path, assets)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["perturbations"] = [entry]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(GridConfigError, match=match):
        run_grid(path, progress=False)
