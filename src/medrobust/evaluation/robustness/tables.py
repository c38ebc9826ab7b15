"""Per-class clean and worst-case scores, and the image quality (SSIM, PSNR, norms) of the runs."""
from __future__ import annotations

from typing import cast

import pandas as pd

from medrobust.evaluation.robustness.curves import GROUP, _common_cases, attacks_only


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

