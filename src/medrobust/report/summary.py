"""The report's summary, in one place for the HTML page and the terminal.

One sentence per model and threat model (clean -> worst case at the largest budget, the
strongest attack, the ensembles and the iterate rule used) and a compact table that fits
80 columns. ``medrobust evaluate`` and ``make demo`` print exactly what the report says.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medrobust.evaluation import robustness as rb
from medrobust.report.formatting import fmt_eps, fmt_score, norm_label, score_name

__all__ = ["Summary", "summarise", "COMPACT_HEADERS"]

COMPACT_HEADERS = ["model", "budget", "clean", "worst", "AUC", "strongest"]
_RULES = {"metric": "the iterate that hurts the metric most", "loss": "the highest-loss iterate",
          "last": "the last iterate"}


@dataclass
class Summary:
    """The summary of one model under one budget group.

    Attributes:
        sentence: the report's lead sentence.
        row: the compact table's cells (:data:`COMPACT_HEADERS`).
    """

    sentence: str
    row: list[str]


def _rules_and_ensembles(df: pd.DataFrame, model: str, norm: str, unit: str) -> tuple[str, list[str]]:
    """The iterate rule(s) of a model's attack rows in one budget group, and its ensemble attacks."""
    rows = df[(df["model"] == model) & (df["kind"] == "attack") & (df["norm"] == norm) & (df["eps_unit"] == unit)]
    rules = sorted(set(rows["iterate_rule"].dropna())) if "iterate_rule" in rows else []
    methods = rows.drop_duplicates("perturbation")
    ensembles = sorted(methods[methods["method"].fillna("").str.startswith("ensemble")]["perturbation"]) \
        if "method" in methods else []
    rule = " / ".join(_RULES.get(r, r) for r in rules) or "the highest-loss iterate"
    return rule, ensembles


def _sentence(h: pd.Series, task: str, attacks: str, flagged: int, rule: str, ensembles: list[str]) -> str:
    what = score_name(task)
    moved = "falls" if h["clean"] - h["worst"] > 0.005 else "stays"
    text = (f"Under the worst of {h['n_attacks']} attack{'s' * (h['n_attacks'] != 1)} ({attacks}) at "
            f"{norm_label(h['norm'])} eps {fmt_eps(h['eps'], h['eps_unit'])}, the {what} of {h['model']} {moved} "
            f"from {fmt_score(h['clean'], task)} (clean) to {fmt_score(h['worst'], task)} over {h['n_cases']} "
            f"case{'s' * (h['n_cases'] != 1)}; the strongest single attack there is {h['strongest']}. "
            f"Each attack keeps, per case, {rule}"
            f"{'; ensembles: ' + ', '.join(ensembles) if ensembles else ''}. "
            f"The normalised area under the worst-case curve (eps 0 to {fmt_eps(h['eps'], h['eps_unit'])}) is "
            f"{fmt_score(h['auc'], task)} (it would equal the clean score if no budget had any effect).")
    if flagged:
        text += (f" {flagged} attack{'s' * (flagged != 1)} show{'s' * (flagged == 1)} signs of gradient masking: "
                 "treat these numbers as upper bounds (see the masking checks).")
    return text


def summarise(df: pd.DataFrame, tasks: dict[str, str], checks: pd.DataFrame | None = None) -> list[Summary]:
    """One :class:`Summary` per model (its main budget group), from the store's runs.

    Args:
        df: the ``runs`` dataframe (:meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`).
        tasks: ``{model: task}``.
        checks: the store's masking checks (``checks_dataframe``), or None.

    Returns:
        The summaries, one per model with attack rows.

    Example:
        >>> import pandas as pd
        >>> runs = [("pgd", "a", 0.5), ("pgd", "b", 0.2), ("square", "a", 0.3), ("square", "b", 0.6)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": c, "clean_score": 0.9,
        ...                     "adv_score": s, "iterate_rule": "metric", "method": None} for p, c, s in runs])
        >>> (s,) = summarise(df, {"m": "segmentation"})
        >>> s.row
        ['m', 'L∞ 4/255', '0.900', '0.250', '0.575', 'square']
        >>> "the iterate that hurts the metric most" in s.sentence
        True
    """
    if df.empty:
        return []
    heads = rb.headline(df)
    flagged = checks[checks["likely_masking"] == 1].groupby("model").size() \
        if checks is not None and len(checks) else pd.Series(dtype=int)
    worst = rb.worst_case_curve(df)
    out = []
    for _, h in heads.iterrows():
        task = tasks.get(h["model"], "segmentation")
        group = (worst["model"] == h["model"]) & (worst["norm"] == h["norm"]) & (worst["eps_unit"] == h["eps_unit"])
        rule, ensembles = _rules_and_ensembles(df, h["model"], h["norm"], h["eps_unit"])
        sentence = _sentence(h, task, worst[group]["attacks"].iloc[0], int(flagged.get(h["model"], 0)), rule, ensembles)
        row = [str(h["model"]), f"{norm_label(h['norm'])} {fmt_eps(h['eps'], h['eps_unit'])}",
               fmt_score(h["clean"], task), fmt_score(h["worst"], task), fmt_score(h["auc"], task), str(h["strongest"])]
        out.append(Summary(sentence, row))
    return out


def summary_scalars(df: pd.DataFrame) -> dict[str, float]:
    """The scalars a grid logs: clean score, mean score per perturbation and level, worst case.

    Args:
        df: the ``runs`` dataframe of a results store (``ResultStore.to_dataframe``).

    Returns:
        ``{"<model>/clean": .., "<model>/<perturbation>/<level>": .., "<model>/worst_case_auc/<norm> <unit>": ..,
        "<model>/worst_case/<norm> <unit>": ..}`` (the worst case at the largest eps).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame([{"model": "m", "perturbation": "pgd", "attack": "pgd", "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": "a", "clean_score": 0.9,
        ...                     "adv_score": 0.5, "task": "segmentation"}])
        >>> from medrobust.report.summary import summary_scalars
        >>> summary_scalars(df)["m/pgd/4"]
        0.5
    """
    out: dict[str, float] = {}
    if df.empty:
        return out
    for model, rows in df.groupby("model"):
        out[f"{model}/clean"] = float(rows.drop_duplicates("case_id")["clean_score"].mean())
        for (pert, level), runs in rows.groupby(["perturbation", "eps_stated"]):
            out[f"{model}/{pert}/{level:g}"] = float(runs["adv_score"].mean())
    heads = rb.headline(df[df["kind"] == "attack"]) if (df["kind"] == "attack").any() else None
    for _, head in (heads.iterrows() if heads is not None else iter(())):
        group = f"{head['norm']} {head['eps_unit']}"
        out[f"{head['model']}/worst_case/{group}"] = float(head["worst"])
        out[f"{head['model']}/worst_case_auc/{group}"] = float(head["auc"])
    return out

