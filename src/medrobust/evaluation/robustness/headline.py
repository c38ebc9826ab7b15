"""The summary's headline per model: clean and worst-case score at the largest eps of its main budget group."""
from __future__ import annotations

import pandas as pd

from medrobust.evaluation.robustness.curves import attacks_only, auc_table, worst_case_curve, worst_case_per_case


def main_group(df: pd.DataFrame, model: str) -> tuple[str, str] | None:
    """The (norm, eps_unit) group of ``model`` with the most attacks (L-inf first on ties).

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses model, kind, norm, eps_unit and perturbation.
        model: the model name.

    Returns:
        ``(norm, eps_unit)``, or None when ``model`` has no attack row.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import main_group
        >>> df = pd.DataFrame({"model": "m", "kind": "attack", "norm": ["linf", "l2", "l2"],
        ...                    "eps_unit": "1/255", "perturbation": ["pgd", "pgd-l2", "apgd-l2"]})
        >>> main_group(df, "m"), main_group(df, "other")
        (('l2', '1/255'), None)
    """
    atk = attacks_only(df)
    atk = atk[atk["model"] == model]
    if atk.empty:
        return None
    counts = atk.groupby(["norm", "eps_unit"])["perturbation"].nunique().reset_index()
    counts["linf"] = counts["norm"] == "linf"
    best = counts.sort_values(["perturbation", "linf"], ascending=False).iloc[0]
    return str(best["norm"]), str(best["eps_unit"])


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model for the summary: clean and worst-case score at the largest eps.

    Taken in the model's :func:`main_group`; models without attack rows are left out.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); needs the columns :func:`worst_case_per_case` uses.

    Returns:
        Columns: model, norm, eps_unit, eps, clean, worst, n_attacks, n_cases, auc (of the
        worst-case curve), strongest (the attack that is worst for the most cases at that
        eps).

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import headline
        >>> clean = {"a": 0.9, "b": 0.8}
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": clean[c],
        ...                     "adv_score": s} for p, c, s in runs])
        >>> headline(df)[["eps", "clean", "worst", "auc"]].round(3).values.tolist()
        [[4.0, 0.85, 0.25, 0.55]]
    """
    curve, auc, per_case = worst_case_curve(df), auc_table(df), worst_case_per_case(df)
    rows = []
    for model in sorted(df["model"].unique()):
        group = main_group(df, model)
        if group is None:
            continue
        norm, unit = group
        sel = (curve["model"] == model) & (curve["norm"] == norm) & (curve["eps_unit"] == unit)
        c = curve[sel].sort_values("eps_stated")
        top, clean = c.iloc[-1], c.iloc[0]
        pc = per_case[(per_case["model"] == model) & (per_case["norm"] == norm) &
                      (per_case["eps_unit"] == unit) & (per_case["eps_stated"] == top["eps_stated"])]
        a = auc[(auc["model"] == model) & (auc["norm"] == norm) & (auc["eps_unit"] == unit) &
                (auc["curve"] == "worst case")]
        rows.append({"model": model, "norm": norm, "eps_unit": unit, "eps": float(top["eps_stated"]),
                     "clean": float(clean["score"]), "worst": float(top["score"]),
                     "n_attacks": int(top["n_attacks"]), "n_cases": int(top["n_cases"]),
                     "auc": float(a["auc"].iloc[0]),
                     "strongest": pc["worst_attack"].value_counts().index[0] if len(pc) else ""})
    return pd.DataFrame(rows, columns=["model", "norm", "eps_unit", "eps", "clean", "worst", "n_attacks",
                                       "n_cases", "auc", "strongest"])
