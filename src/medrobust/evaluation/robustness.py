"""Robustness summaries derived from the results store's dataframe (design.md section 7).

Every function takes the ``runs`` dataframe of :meth:`ResultStore.to_dataframe` and
returns a small dataframe. The score is the store's ``clean_score`` / ``adv_score``
(mean foreground Dice in [0, 1], or 1/0 correct for a classifier, so means are accuracies).

Budgets are only compared within one **budget group** ``(norm, eps_unit)``: eps 4 in
1/255 and eps 4 in HU are different budgets. Within a group:

- attack curve: mean adv score over cases at each stated eps, with the clean point at
  eps = 0 (mean clean score over the same cases) prepended when 0 was not run;
- worst case over attacks: per case, the minimum adv score over every attack of the
  group at that eps (a classifier counts as misclassified if any attack succeeds), taken
  over the cases every attack of the group has finished, then averaged;
- normalised AUC: ``AUC = 1/(eps_max - eps_min) * trapezoid(score, eps)`` over the stated
  eps range including the clean point eps = 0 (same units as the score; 1 = perfect and
  unaffected, equal to the score itself when only eps = 0 exists).

Corruption runs (``kind == "corruption"``, severity 1-5 in ``eps_stated``) have their own
summaries at the end (curves over severity, relative corruption error CE_c and mCE); they
never enter the worst case over attacks.
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

GROUP = ["model", "norm", "eps_unit"]
BLACK_BOX = {"square"}
NOISE = {"gaussian"}
TOLERANCE = 0.02  # score difference (Dice or accuracy) treated as real in masking checks


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


def per_class_table(df: pd.DataFrame, classes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Per-class clean and worst-case scores per (model, norm, eps_unit, eps_stated, class).

    Segmentation: per class and case the minimum Dice over the group's attacks (so a class
    may be worst under a different attack than the mean), then the mean over cases.
    Classification: accuracy per true class (``classes[model][label]`` names it).
    Like :func:`worst_case_per_case`, only cases every attack of the group finished count.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses the columns of :func:`worst_case_per_case` plus ``task`` and, for
            segmentation, ``clean_per_class`` / ``adv_per_class`` ({class name: Dice}),
            for classification ``label``.
        classes: {model: class names by label index} for classifiers; a label without a
            name is shown as its number. Unused for segmentation.

    Returns:
        Columns: model, norm, eps_unit, eps_stated, class, clean, worst, n_cases.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import per_class_table
        >>> runs = [("pgd", {"gm": 0.4, "wm": 0.3}), ("square", {"gm": 0.6, "wm": 0.1})]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": "a", "task": "segmentation",
        ...                     "clean_score": 0.85, "adv_score": sum(d.values()) / 2,
        ...                     "clean_per_class": {"gm": 0.9, "wm": 0.8}, "adv_per_class": d} for p, d in runs])
        >>> per_class_table(df)[["class", "clean", "worst"]].values.tolist()
        [['gm', 0.9, 0.4], ['wm', 0.8, 0.1]]
    """
    rows = []
    for keys, g in attacks_only(df).groupby(GROUP + ["eps_stated"], sort=True):
        g = _common_cases(g)
        base = dict(zip(GROUP + ["eps_stated"], keys))
        if (g["task"] == "classification").all():
            names = (classes or {}).get(str(keys[0]), [])
            worst = g.groupby("case_id").agg(label=("label", "first"), clean=("clean_score", "first"),
                                             worst=("adv_score", "min"))
            for label, c in worst.groupby("label"):
                k = int(cast(float, label))
                name = names[k] if k < len(names) else str(k)
                rows.append({**base, "class": name, "clean": c["clean"].mean(), "worst": c["worst"].mean(),
                             "n_cases": len(c)})
            continue
        clean = pd.DataFrame(list(g.drop_duplicates("case_id").set_index("case_id")["clean_per_class"]))
        adv = pd.DataFrame(list(g["adv_per_class"]), index=g["case_id"].to_numpy())
        worst = adv.groupby(level=0).min()
        for name in adv.columns:
            rows.append({**base, "class": name, "clean": float(clean[name].mean()),
                         "worst": float(worst[name].mean()), "n_cases": len(worst)})
    return pd.DataFrame(rows, columns=GROUP + ["eps_stated", "class", "clean", "worst", "n_cases"])


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean SSIM, PSNR (dB) and achieved norms per (model, perturbation, norm, eps_unit, eps_stated).

    Every row counts (attacks and corruptions); a missing ``norm`` is shown as ``"-"``.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses model, perturbation, norm, eps_unit, eps_stated, ssim, psnr,
            linf_model, l2_model, linf_raw, l2_raw and attack_seconds.

    Returns:
        Columns: model, perturbation, norm, eps_unit, eps_stated, then the means of ssim,
        psnr, linf_model, l2_model, linf_raw, l2_raw, attack_seconds.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import quality_table
        >>> df = pd.DataFrame([{"model": "m", "perturbation": "pgd", "norm": "linf", "eps_unit": "1/255",
        ...                     "eps_stated": 4.0, "ssim": s, "psnr": p, "linf_model": 4 / 255, "l2_model": 1.0,
        ...                     "linf_raw": 4.0, "l2_raw": 255.0, "attack_seconds": 0.5}
        ...                    for s, p in [(0.9, 36.0), (0.8, 34.0)]])
        >>> quality_table(df)[["ssim", "psnr"]].round(3).values.tolist()
        [[0.85, 35.0]]
    """
    cols = ["ssim", "psnr", "linf_model", "l2_model", "linf_raw", "l2_raw", "attack_seconds"]
    keys = ["model", "perturbation", "norm", "eps_unit", "eps_stated"]
    if df.empty:
        return pd.DataFrame(columns=keys + cols)
    d = df.assign(norm=df["norm"].fillna("-"))
    return d.groupby(keys, sort=True)[cols].mean().reset_index()


def masking_checks(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Signs of gradient masking per (model, attack); rows: model, attack, likely_masking, reasons.

    Flags: the attack's best loss never rose above its initial loss; its robust score
    rises with eps by more than ``TOLERANCE``; the black-box Square attack beats a
    gradient attack at the same budget by more than ``TOLERANCE``.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses the columns of :func:`attack_curves` plus ``loss_initial`` and
            ``loss_best`` (NaN where the attack has no loss, e.g. noise).

    Returns:
        One dict per (model, perturbation label): ``model``, ``attack`` (the label),
        ``likely_masking`` (bool) and ``reasons`` ("; "-joined, or "no sign of masking"),
        ready for :meth:`~medrobust.evaluation.store.ResultStore.write_checks`.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import masking_checks
        >>> runs = [("pgd", 0.7), ("square", 0.2)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": "a", "clean_score": 0.9,
        ...                     "adv_score": s, "loss_initial": 1.0, "loss_best": 2.0} for p, s in runs])
        >>> for check in masking_checks(df):
        ...     print(check["attack"], check["likely_masking"], "-", check["reasons"])
        pgd True - black-box square is stronger at eps 4
        square False - no sign of masking
    """
    curves = attack_curves(df)
    atk = attacks_only(df)
    out = []
    for (model, pert), g in atk.groupby(["model", "perturbation"], sort=True):
        reasons = []
        name = g["attack"].iloc[0]
        loss = g.dropna(subset=["loss_initial", "loss_best"])
        loss = loss[loss["eps_stated"] > 0]
        if name not in NOISE and len(loss) and (loss["loss_best"] - loss["loss_initial"]).max() <= 1e-7:
            reasons.append("best loss never rose above the initial loss")
        c = curves[(curves["model"] == model) & (curves["perturbation"] == pert)].sort_values("eps_stated")
        rise = c["score"].diff()
        if (rise > TOLERANCE).any():
            e = c["eps_stated"].iloc[int(np.nanargmax(rise.to_numpy()))]
            reasons.append(f"score rises with eps (by {rise.max():.3f} at eps {e:g})")
        if name not in BLACK_BOX | NOISE:
            norm, unit = g["norm"].iloc[0], g["eps_unit"].iloc[0]
            bb = curves[(curves["model"] == model) & (curves["attack"].isin(BLACK_BOX)) &
                        (curves["norm"] == norm) & (curves["eps_unit"] == unit) & (curves["eps_stated"] > 0)]
            both = c.merge(bb, on="eps_stated", suffixes=("", "_bb"))
            worse = both[both["score_bb"] < both["score"] - TOLERANCE]
            if len(worse):
                e = worse["eps_stated"].iloc[0]
                reasons.append(f"black-box {worse['perturbation_bb'].iloc[0]} is stronger at eps {e:g}")
        out.append({"model": model, "attack": pert, "likely_masking": bool(reasons),
                    "reasons": "; ".join(reasons) or "no sign of masking"})
    return out


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


# -- corruptions: severities 1-5 in place of eps; never part of the worst case over attacks --

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
