"""The report's certified-robustness section: certified score against radius beside the attacks.

Certified curves (randomized smoothing, lower bounds) are drawn on the same axis as the
empirical worst case under L2 attacks in the same unit (an upper bound); every radius where
the certified score exceeds the empirical one is listed as a bug.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from medrobust.evaluation.certified_tables import certified_curves, certified_vs_empirical
from medrobust.evaluation.robustness import worst_case_curve
from medrobust.report.formatting import fmt_eps, fmt_score, score_name
from medrobust.report.plots import new_figure, to_png

__all__ = ["certify_context"]


def _figure(curves: pd.DataFrame, worst: pd.DataFrame, model: str, unit: str, score_label: str) -> str:
    fig, ax = new_figure(figsize=(6.0, 3.6))
    for (pert, sigma), c in curves.groupby(["perturbation", "sigma"], sort=True):
        ax.plot(c["radius"], c["certified"], marker="o", label=f"certified ({pert}, sigma {fmt_eps(float(str(sigma)), unit)})")
    w = worst[(worst["model"] == model) & (worst["norm"] == "l2") & (worst["eps_unit"] == unit)] if len(worst) else worst
    if len(w):
        ax.plot(w["eps_stated"], w["score"], color="black", linestyle="--", marker="s",
                label="empirical worst case, L2 attacks")
    ax.set_xlabel(f"L2 radius ({unit})")
    ax.set_ylabel(score_label)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    return to_png(fig)


def certify_context(df: pd.DataFrame, tasks: dict[str, str]) -> dict[str, Any] | None:
    """What the template's certification section shows, or None when no row is a certification.

    Args:
        df: the store's runs.
        tasks: ``{model: task}``.

    Returns:
        ``{"figures": [{model, png}], "table": {...}, "violations": [sentence], "n": ...}`` or None.
    """
    curves = certified_curves(df)
    if curves.empty:
        return None
    worst = worst_case_curve(df)
    figures = [{"model": str(m), "png": _figure(c, worst, str(m), str(unit), score_name(tasks.get(str(m), "segmentation")))}
               for (m, unit), c in curves.groupby(["model", "unit"], sort=True)]
    checks = certified_vs_empirical(df)
    violations = [f"{r['model']}: certified {fmt_score(r['certified'], tasks.get(r['model'], ''))} above the empirical "
                  f"worst case {fmt_score(r['empirical'], tasks.get(r['model'], ''))} at radius "
                  f"{fmt_eps(r['radius'], r['unit'])} (sigma {fmt_eps(r['sigma'], r['unit'])}): a bug, please report it"
                  for _, r in checks[checks["violation"]].iterrows()]
    rows = [[r["model"], r["perturbation"], fmt_eps(r["sigma"], r["unit"]), fmt_eps(r["radius"], r["unit"]),
             fmt_score(r["certified"], tasks.get(r["model"], "")), f"{r['abstain_rate']:.3f}", int(r["n_cases"])]
            for _, r in curves.iterrows()]
    table = {"headers": ["model", "entry", "sigma", "radius", "certified", "abstain rate", "cases"], "rows": rows,
             "caption": "certified score (abstentions count as wrong) at each L2 radius, mean over cases"}
    return {"figures": figures, "table": table, "violations": violations, "checked": len(checks)}
