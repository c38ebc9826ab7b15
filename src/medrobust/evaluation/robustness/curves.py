"""Attack curves, the worst case over attacks and the normalised AUC of each curve.

Budgets are compared only within one budget group ``(norm, eps_unit)`` (:data:`GROUP` adds
the model); every curve starts at the clean point eps = 0 (see :mod:`medrobust.evaluation.robustness`).
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

GROUP = ["model", "norm", "eps_unit"]


def attacks_only(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of adversarial attacks (not corruptions), with ``norm`` filled.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); uses ``kind`` and ``norm``.

    Returns:
        A copy of the rows with ``kind == "attack"``; a missing ``norm`` (stores written
        before norms were recorded) becomes ``"linf"``.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import attacks_only
        >>> df = pd.DataFrame({"kind": ["attack", "corruption", "attack"], "norm": ["l2", None, None]})
        >>> attacks_only(df)["norm"].tolist()
        ['l2', 'linf']
    """
    out = df[df["kind"] == "attack"].copy()
    out["norm"] = out["norm"].fillna("linf")
    return out


def _with_clean_point(curve: pd.DataFrame, clean: float, keys: dict[str, Any]) -> pd.DataFrame:
    if (curve["eps_stated"] == 0).any():
        return curve
    point = pd.DataFrame([{**keys, "eps_stated": 0.0, "score": clean, "n_cases": curve["n_cases"].max()}])
    return pd.concat([point, curve], ignore_index=True)


def attack_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean adv score vs eps per (model, norm, eps_unit, perturbation), clean point at eps 0.

    The clean point (eps 0, the mean clean score of the perturbation's cases) is prepended
    when eps 0 was not run itself.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses model, kind, norm, eps_unit, perturbation, attack, eps_stated, case_id,
            clean_score and adv_score. Corruption rows are ignored.

    Returns:
        One row per (curve, eps), sorted by eps within each curve. Columns: model, norm,
        eps_unit, perturbation, attack, eps_stated, score (mean adv score over cases),
        n_cases. Empty (same columns) when there is no attack row.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import attack_curves
        >>> clean = {"a": 0.9, "b": 0.8}
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": clean[c],
        ...                     "adv_score": s} for p, c, s in runs])
        >>> curves = attack_curves(df)
        >>> curves[["perturbation", "eps_stated"]].values.tolist()
        [['pgd', 0.0], ['pgd', 4.0], ['square', 0.0], ['square', 4.0]]
        >>> curves["score"].round(3).tolist()
        [0.85, 0.35, 0.85, 0.45]
    """
    rows = []
    for (model, norm, unit, pert), g in attacks_only(df).groupby(GROUP + ["perturbation"], sort=True):
        keys = {"model": model, "norm": norm, "eps_unit": unit, "perturbation": pert, "attack": g["attack"].iloc[0]}
        curve = g.groupby("eps_stated").agg(score=("adv_score", "mean"), n_cases=("case_id", "nunique")).reset_index()
        curve = curve.assign(**keys)
        clean = g.drop_duplicates("case_id")["clean_score"].mean()
        rows.append(_with_clean_point(curve, clean, keys).sort_values("eps_stated"))
    cols = GROUP + ["perturbation", "attack", "eps_stated", "score", "n_cases"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def _common_cases(g: pd.DataFrame) -> pd.DataFrame:
    """Rows of the cases that every perturbation of the group finished at this eps."""
    n_pert = g["perturbation"].nunique()
    per_case = g.groupby("case_id")["perturbation"].nunique()
    return g[g["case_id"].isin(per_case[per_case == n_pert].index)]


def worst_case_per_case(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, norm, eps_unit, eps_stated, case): min adv score over the group's attacks.

    Only the cases that every attack of the group finished at that eps are kept, so a
    half-run attack cannot make the worst case look better than it is.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses model, kind, norm, eps_unit, eps_stated, perturbation, case_id,
            clean_score and adv_score.

    Returns:
        One row per (group, eps, case). Columns: model, norm, eps_unit, eps_stated, case_id,
        score (the minimum adv score), clean_score, worst_attack (the perturbation label
        that reached it), n_attacks. Empty (same columns) when there is no attack row.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import worst_case_per_case
        >>> clean = {"a": 0.9, "b": 0.8}
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": clean[c],
        ...                     "adv_score": s} for p, c, s in runs])
        >>> worst = worst_case_per_case(df)
        >>> worst[["case_id", "score", "worst_attack"]].values.tolist()
        [['a', 0.3, 'square'], ['b', 0.2, 'pgd']]
    """
    rows = []
    for keys, g in attacks_only(df).groupby(GROUP + ["eps_stated"], sort=True):
        g = _common_cases(g)
        idx = g.groupby("case_id")["adv_score"].idxmin()
        worst = g.loc[idx, ["case_id", "adv_score", "clean_score", "perturbation"]]
        worst = worst.rename(columns={"adv_score": "score", "perturbation": "worst_attack"})
        model, norm, unit, eps = keys
        worst = worst.assign(model=str(model), norm=str(norm), eps_unit=str(unit), eps_stated=float(cast(float, eps)),
                             n_attacks=g["perturbation"].nunique())
        rows.append(worst)
    cols = GROUP + ["eps_stated", "case_id", "score", "clean_score", "worst_attack", "n_attacks"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def worst_case_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Mean worst-case score vs eps per (model, norm, eps_unit), clean point at eps 0.

    The mean over cases of :func:`worst_case_per_case`; it is never above any single
    attack's curve of the same group.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); needs the columns :func:`worst_case_per_case` uses.

    Returns:
        One row per (group, eps), sorted by eps. Columns: model, norm, eps_unit, eps_stated,
        score, n_cases, n_attacks, attacks (the perturbation labels that form the ensemble,
        comma-separated). Empty (same columns) when there is no attack row.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import worst_case_curve
        >>> clean = {"a": 0.9, "b": 0.8}
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": clean[c],
        ...                     "adv_score": s} for p, c, s in runs])
        >>> curve = worst_case_curve(df)
        >>> curve["eps_stated"].tolist(), curve["score"].round(3).tolist()
        ([0.0, 4.0], [0.85, 0.25])
        >>> curve["attacks"].iloc[0]
        'pgd, square'
    """
    per_case = worst_case_per_case(df)
    atk = attacks_only(df)
    rows = []
    for (model, norm, unit), g in per_case.groupby(GROUP, sort=True):
        keys = {"model": str(model), "norm": str(norm), "eps_unit": str(unit)}
        curve = g.groupby("eps_stated").agg(score=("score", "mean"), n_cases=("case_id", "nunique"),
                                            n_attacks=("n_attacks", "max")).reset_index().assign(**keys)
        sel = atk[(atk["model"] == model) & (atk["norm"] == norm) & (atk["eps_unit"] == unit)]
        curve = _with_clean_point(curve, g.drop_duplicates("case_id")["clean_score"].mean(), keys)
        curve["attacks"] = ", ".join(sorted(sel["perturbation"].unique()))
        rows.append(curve.sort_values("eps_stated"))
    cols = GROUP + ["eps_stated", "score", "n_cases", "n_attacks", "attacks"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def normalised_auc(eps: ArrayLike, score: ArrayLike) -> float:
    """Normalised area under a robustness curve: ``1/(eps_max - eps_min) * trapezoid(score, eps)``.

    The points may come in any order (they are sorted by eps). In the units of the score:
    1 = perfect at every eps. With a single eps (or all eps equal) it is the mean score.

    Args:
        eps: the stated budgets, including the clean point 0 when it belongs to the curve.
        score: the score at each eps.

    Returns:
        The normalised AUC as a Python float.

    Raises:
        ValueError: no point at all.

    Shape:
        - eps: ``(N,)``, N >= 1
        - score: ``(N,)``

    Example:
        >>> from medrobust.evaluation.robustness import normalised_auc
        >>> normalised_auc([0, 2, 4, 8], [1.0, 0.5, 0.5, 0.0])  # (1.5 + 1 + 1) / 8
        0.4375
        >>> normalised_auc([0], [0.7])
        0.7
    """
    e, s = np.asarray(eps, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(e)
    e, s = e[order], s[order]
    if e.size == 0:
        raise ValueError("normalised_auc needs at least one (eps, score) point")
    if e[-1] == e[0]:
        return float(s.mean())
    return float(np.trapezoid(s, e) / (e[-1] - e[0]))


def auc_table(df: pd.DataFrame) -> pd.DataFrame:
    """AUC of every attack curve and of the worst-case curve ("worst case" row) per group.

    Each AUC is :func:`normalised_auc` over the curve's eps range, clean point (eps 0)
    included, of :func:`attack_curves` and :func:`worst_case_curve`.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); needs the columns :func:`attack_curves` uses.

    Returns:
        Columns: model, norm, eps_unit, curve (perturbation label or ``"worst case"``),
        eps_max, auc; within each (model, norm, eps_unit) the worst case comes first, then
        the attacks by label.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import auc_table
        >>> clean = {"a": 0.9, "b": 0.8}
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": clean[c],
        ...                     "adv_score": s} for p, c, s in runs])
        >>> auc = auc_table(df)
        >>> auc["curve"].tolist(), auc["auc"].round(3).tolist()
        (['worst case', 'pgd', 'square'], [0.55, 0.6, 0.65])
    """
    rows = []
    for (model, norm, unit, pert), c in attack_curves(df).groupby(GROUP + ["perturbation"], sort=True):
        rows.append({"model": model, "norm": norm, "eps_unit": unit, "curve": pert,
                     "eps_max": c["eps_stated"].max(), "auc": normalised_auc(c["eps_stated"], c["score"])})
    for (model, norm, unit), c in worst_case_curve(df).groupby(GROUP, sort=True):
        rows.append({"model": model, "norm": norm, "eps_unit": unit, "curve": "worst case",
                     "eps_max": c["eps_stated"].max(), "auc": normalised_auc(c["eps_stated"], c["score"])})
    out = pd.DataFrame(rows, columns=GROUP + ["curve", "eps_max", "auc"])
    out["_order"] = out["curve"] != "worst case"  # worst case first within each model and group
    return out.sort_values(GROUP + ["_order", "curve"]).drop(columns="_order").reset_index(drop=True)
