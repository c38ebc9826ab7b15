"""Corruption summaries: curves over severity 1-5, relative corruption error CE_c and mCE.

Corruption runs never enter the worst case over attacks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def corruptions_only(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of corruption runs (``kind == "corruption"``; ``eps_stated`` is the severity).

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); uses ``kind``.

    Returns:
        A copy of the corruption rows.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import corruptions_only
        >>> df = pd.DataFrame({"kind": ["attack", "corruption"], "attack": ["pgd", "noise"]})
        >>> corruptions_only(df)["attack"].tolist()
        ['noise']
    """
    return df[df["kind"] == "corruption"].copy()


def corruption_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean score vs severity per (model, corruption entry), clean point at severity 0.

    The clean point is the mean clean score over the entry's cases.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses model, kind, perturbation, attack (the corruption), eps_stated (the
            severity), case_id, clean_score and adv_score.

    Returns:
        One row per (entry, severity), severity 0 first. Columns: model, perturbation,
        corruption, severity, score, n_cases. Empty (same columns) without corruption rows.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import corruption_curves
        >>> df = pd.DataFrame([{"model": "m", "perturbation": "noise", "attack": "noise", "kind": "corruption",
        ...                     "eps_stated": float(s), "case_id": "a", "clean_score": 0.9, "adv_score": a}
        ...                    for s, a in [(1, 0.8), (3, 0.5)]])
        >>> curve = corruption_curves(df)
        >>> curve["severity"].tolist(), curve["score"].tolist()
        ([0.0, 1.0, 3.0], [0.9, 0.8, 0.5])
    """
    rows = []
    for (model, pert), g in corruptions_only(df).groupby(["model", "perturbation"], sort=True):
        curve = g.groupby("eps_stated").agg(score=("adv_score", "mean"), n_cases=("case_id", "nunique")).reset_index()
        clean = pd.DataFrame([{"eps_stated": 0.0, "score": g.drop_duplicates("case_id")["clean_score"].mean(),
                               "n_cases": g["case_id"].nunique()}])
        curve = pd.concat([clean, curve], ignore_index=True).rename(columns={"eps_stated": "severity"})
        rows.append(curve.assign(model=str(model), perturbation=str(pert), corruption=g["attack"].iloc[0]))
    cols = ["model", "perturbation", "corruption", "severity", "score", "n_cases"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def corruption_errors(df: pd.DataFrame) -> pd.DataFrame:
    """Relative corruption error of each (model, corruption entry c).

    ``CE_c = (S_clean - mean_s S_{c,s}) / S_clean``, the fraction of the clean score lost on
    average over the severities s run (S: mean score over the same cases; 0 = unaffected,
    1 = everything lost, negative = the corruption helped; NaN when S_clean = 0).

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); needs the columns :func:`corruption_curves` uses.

    Returns:
        Columns: model, perturbation, corruption, clean, mean, ce, severities (list of the
        severities run), n_cases.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import corruption_errors
        >>> df = pd.DataFrame([{"model": "m", "perturbation": "noise", "attack": "noise", "kind": "corruption",
        ...                     "eps_stated": float(s), "case_id": "a", "clean_score": 0.8, "adv_score": a}
        ...                    for s, a in [(1, 0.6), (3, 0.2)]])
        >>> errors = corruption_errors(df)
        >>> errors[["clean", "mean", "ce"]].round(3).values.tolist(), errors["severities"].tolist()
        ([[0.8, 0.4, 0.5]], [[1, 3]])
    """
    rows = []
    for (model, pert, name), c in corruption_curves(df).groupby(["model", "perturbation", "corruption"], sort=True):
        clean = float(c.loc[c["severity"] == 0, "score"].iloc[0])
        levels = c[c["severity"] > 0]
        mean = float(levels["score"].mean())
        rows.append({"model": model, "perturbation": pert, "corruption": name, "clean": clean, "mean": mean,
                     "ce": (clean - mean) / clean if clean > 0 else float("nan"),
                     "severities": [int(s) for s in levels["severity"]], "n_cases": int(c["n_cases"].max())})
    return pd.DataFrame(rows, columns=["model", "perturbation", "corruption", "clean", "mean", "ce", "severities",
                                       "n_cases"])


def corruption_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model: clean score, mean corrupted score, mCE and the worst corruption.

    The mean is over every corruption and severity (each (corruption, severity) weighted
    equally), ``mCE = mean_c CE_c`` over :func:`corruption_errors`, and ``worst`` is the
    corruption entry with the largest CE.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns); needs the columns :func:`corruption_curves` uses.

    Returns:
        Columns: model, clean, mean, mce, worst (entry label, "" when every CE is NaN),
        n_corruptions, n_cases.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import corruption_summary
        >>> runs = [("noise", 1, 0.6), ("noise", 3, 0.2), ("blur", 1, 0.7)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "corruption",
        ...                     "eps_stated": float(s), "case_id": "a", "clean_score": 0.8, "adv_score": a}
        ...                    for p, s, a in runs])
        >>> summary = corruption_summary(df)
        >>> summary[["clean", "mean", "mce"]].round(4).values.tolist(), summary["worst"].tolist()
        ([[0.8, 0.5, 0.3125]], ['noise'])
    """
    curves, errors = corruption_curves(df), corruption_errors(df)
    rows = []
    for model, e in errors.groupby("model", sort=True):
        c = curves[(curves["model"] == model) & (curves["severity"] > 0)]
        cases = corruptions_only(df)
        cases = cases[cases["model"] == model].drop_duplicates("case_id")
        rows.append({"model": model, "clean": float(cases["clean_score"].mean()), "mean": float(c["score"].mean()),
                     "mce": float(e["ce"].mean()), "worst": str(e["perturbation"].iloc[int(np.nanargmax(e["ce"].to_numpy()))])
                     if e["ce"].notna().any() else "", "n_corruptions": len(e), "n_cases": len(cases)})
    return pd.DataFrame(rows, columns=["model", "clean", "mean", "mce", "worst", "n_corruptions", "n_cases"])
