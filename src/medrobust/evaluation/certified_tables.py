"""Derived tables of certification rows: certified curves and their check against the attacks.

A certification row (``kind = "certification"``, see
:mod:`medrobust.evaluation.certification`) keeps the certified score of one case at each
radius in its ``options_json``. The certified curve is their mean over cases; it is a lower
bound, so at every radius where the grid also ran L2 attacks in the same unit it must not
exceed the empirical worst case (an upper bound). A radius where it does is a bug, flagged.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medrobust.evaluation.robustness import worst_case_curve

__all__ = ["certified_curves", "certified_vs_empirical"]

TOLERANCE = 1e-6
_CURVE_COLUMNS = ["model", "perturbation", "sigma", "unit", "radius", "certified", "abstain_rate", "n_cases"]


def certified_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean certified score over cases per (model, entry, sigma, radius).

    Args:
        df: the store's runs (certification rows are picked out; others ignored).

    Returns:
        Columns model, perturbation, sigma, unit, radius, certified, abstain_rate, n_cases.

    Example:
        >>> import json, pandas as pd
        >>> rows = [{"model": "m", "perturbation": "certify-gaussian", "kind": "certification", "eps_stated": 0.25,
        ...          "eps_unit": "model", "case_id": c, "options_json": json.dumps(
        ...              {"radii": [0.0, 0.5], "certified": s, "abstain_rate": 0.1})} for c, s in [("a", [1, 1]),
        ...                                                                                       ("b", [1, 0])]]
        >>> certified_curves(pd.DataFrame(rows))[["radius", "certified"]].values.tolist()
        [[0.0, 1.0], [0.5, 0.5]]
    """
    cert = df[df["kind"] == "certification"] if "kind" in df else df.iloc[0:0]
    records = []
    for _, r in cert.iterrows():
        details = json.loads(r["options_json"] or "{}")
        for radius, score in zip(details.get("radii", []), details.get("certified", [])):
            records.append({"model": r["model"], "perturbation": r["perturbation"], "sigma": float(r["eps_stated"]),
                            "unit": r["eps_unit"], "radius": float(radius), "score": float(score),
                            "abstain": float(details.get("abstain_rate", np.nan)), "case_id": r["case_id"]})
    if not records:
        return pd.DataFrame(columns=_CURVE_COLUMNS)
    flat = pd.DataFrame(records)
    out = flat.groupby(["model", "perturbation", "sigma", "unit", "radius"], sort=True).agg(
        certified=("score", "mean"), abstain_rate=("abstain", "mean"), n_cases=("case_id", "nunique")).reset_index()
    return out[_CURVE_COLUMNS]


def certified_vs_empirical(df: pd.DataFrame) -> pd.DataFrame:
    """The certified curve beside the empirical L2 worst case at the radii both measured.

    Args:
        df: the store's runs.

    Returns:
        Columns model, perturbation, sigma, unit, radius, certified, empirical, violation
        (True where certified > empirical: a lower bound above an upper bound, a bug).
    """
    curves = certified_curves(df)
    cols = ["model", "perturbation", "sigma", "unit", "radius", "certified", "empirical", "violation"]
    if curves.empty:
        return pd.DataFrame(columns=cols)
    worst = worst_case_curve(df)
    worst = worst[worst["norm"] == "l2"] if len(worst) else worst
    rows = []
    for _, c in curves.iterrows():
        w = worst[(worst["model"] == c["model"]) & (worst["eps_unit"] == c["unit"])] if len(worst) else worst
        match = w[np.isclose(w["eps_stated"].astype(float), c["radius"])] if len(w) else w
        if len(match):
            empirical = float(match["score"].iloc[0])
            rows.append({**{k: c[k] for k in cols[:6]}, "empirical": empirical,
                         "violation": bool(c["certified"] > empirical + TOLERANCE)})
    return pd.DataFrame(rows, columns=cols)
