"""How the report writes numbers: scores, percentages, budgets and norm names.

One place for the text of every section (:mod:`medrobust.report.html`, the corruption and
classification sections), so a score reads the same wherever it appears.
"""
from __future__ import annotations

import pandas as pd

# "dct" is VAFA's frequency budget: eps is q_max in 1/255 of the valid range.
NORM_LABELS = {"linf": "L∞", "l2": "L2", "dct": "VAFA q_max"}


def fmt_eps(eps: float, unit: str) -> str:
    """Eps as a reader states it.

    Args:
        eps: the stated budget.
        unit: its unit ("1/255", "HU", "raw", "model", "severity" or another name).

    Returns:
        The budget as text.

    Example:
        >>> fmt_eps(4, "1/255"), fmt_eps(8.0, "HU"), fmt_eps(0.1, "model")
        ('4/255', '8 HU', '0.1 (model units)')
    """
    return {"1/255": f"{eps:g}/255", "HU": f"{eps:g} HU", "raw": f"{eps:g} (raw units)",
            "model": f"{eps:g} (model units)", "severity": f"severity {eps:g}"}.get(unit, f"{eps:g} {unit}")


def score_name(task: str) -> str:
    """The name of the main score of a task: accuracy for classifiers, Dice for segmenters.

    Example:
        >>> score_name("classification"), score_name("segmentation")
        ('accuracy', 'mean foreground Dice')
    """
    return "accuracy" if task == "classification" else "mean foreground Dice"


def fmt_score(value: float, task: str) -> str:
    """A score as text: a percentage for classifiers, three decimals for Dice, "-" for NaN.

    Example:
        >>> fmt_score(0.8125, "classification"), fmt_score(0.8125, "segmentation"), fmt_score(float("nan"), "")
        ('81.2%', '0.812', '-')
    """
    if pd.isna(value):
        return "-"
    return f"{100 * value:.1f}%" if task == "classification" else f"{value:.3f}"


def fmt_percent(value: float) -> str:
    """A fraction as a percentage with one decimal, "-" for NaN.

    Example:
        >>> fmt_percent(0.25), fmt_percent(float("nan"))
        ('25.0%', '-')
    """
    return "-" if pd.isna(value) else f"{100 * value:.1f}%"


def norm_label(norm: str) -> str:
    """The reader's name of a norm ("linf" -> "L∞"); unknown names are kept.

    Example:
        >>> norm_label("linf"), norm_label("dct")
        ('L∞', 'VAFA q_max')
    """
    return NORM_LABELS.get(norm, norm)
