"""The report's corruption section: scores over severity, relative corruption error, thumbnails.

Built only from the store's corruption rows (``kind == "corruption"``) and the thumbnails
the grid writes under ``examples/corruptions/``; kept apart from the adversarial sections
(corruptions never enter the worst case over attacks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from medrobust.evaluation import robustness as rb
from medrobust.evaluation.thumbnails import THUMBNAILS_DIR, load_thumbnail, thumbnail_name
from medrobust.report.formatting import fmt_percent, fmt_score
from medrobust.report.plots import new_figure, to_png


def severity_figure(curves: pd.DataFrame, model: str, score_label: str) -> str:
    """Score vs severity for ``model``: a line per corruption, the mean over corruptions dashed."""
    mine = curves[curves["model"] == model]
    fig, ax = new_figure(figsize=(6.2, 3.8))
    for pert, c in mine.groupby("perturbation", sort=True):
        ax.plot(c["severity"], c["score"], marker="o", lw=1.4, ms=4, label=pert)
    mean = mine.groupby("severity")["score"].mean()
    ax.plot(mean.index, mean.to_numpy(), color="black", lw=2.6, ls="--", marker="s", ms=5, label="mean")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel(score_label)
    ax.set_xticks(range(0, 6))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{model}: corruptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=2)
    return to_png(fig)


def _show(ax: Axes, image: np.ndarray, info: dict[str, Any]) -> None:
    lo, hi = float(info["low"]), float(info["high"])
    if image.ndim == 3:  # RGB
        ax.imshow(np.clip((image - lo) / (hi - lo), 0, 1), interpolation="nearest")
    elif int(info.get("volume_slice", 0)):  # in-plane slice of a volume: first axis to the right
        ax.imshow(image.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    else:
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def thumbnails_figure(results_dir: Path, entries: list[str], severities: list[int]) -> tuple[str | None, str]:
    """Rows: corruption entries; columns: the clean slice and each severity (small thumbnails).

    Returns (PNG as base64 or None when no thumbnail exists, the case shown).
    """
    folder = results_dir / "examples" / THUMBNAILS_DIR
    found = {(e, s): folder / thumbnail_name(e, s) for e in entries for s in severities}
    found = {k: v for k, v in found.items() if v.is_file()}
    rows = [e for e in entries if any((e, s) in found for s in severities)]
    if not rows:
        return None, ""
    case = ""
    fig, axes = new_figure(len(rows), len(severities) + 1, squeeze=False,
                           figsize=(1.45 * (len(severities) + 1), 1.5 * len(rows)))
    for i, entry in enumerate(rows):
        for ax in axes[i]:
            ax.axis("off")
        for j, s in enumerate(severities):
            if (entry, s) not in found:
                continue
            t = load_thumbnail(found[(entry, s)])
            case = str(t["info"]["case_id"])
            if not axes[i, 0].images:
                _show(axes[i, 0], t["clean"], t["info"])
                axes[i, 0].axis("on")
                axes[i, 0].set_ylabel(entry, fontsize=8)
            _show(axes[i, j + 1], t["corrupted"], t["info"])
            axes[i, j + 1].axis("on")
            if i == 0:
                axes[i, j + 1].set_title(f"severity {s}", fontsize=8)
        if i == 0:
            axes[0, 0].set_title("clean", fontsize=8)
    return to_png(fig, pad=0.3), case


def corruption_context(results_dir: Path, df: pd.DataFrame, tasks: dict[str, str]) -> dict[str, Any] | None:
    """What the template's corruption section shows; None when the grid ran no corruption."""
    rows = rb.corruptions_only(df)
    if rows.empty:
        return None
    summary, errors, curves = rb.corruption_summary(df), rb.corruption_errors(df), rb.corruption_curves(df)
    severities = sorted(int(s) for s in rows["eps_stated"].unique())
    sentences, tables, figures = [], [], []
    for _, r in summary.iterrows():
        task = tasks.get(r["model"], "segmentation")
        what = "accuracy" if task == "classification" else "mean foreground Dice"
        sentences.append(f"Over {r['n_corruptions']} corruption{'s' * (r['n_corruptions'] != 1)} at severities "
                         f"{', '.join(map(str, severities))}, the {what} of {r['model']} averages "
                         f"{fmt_score(r['mean'], task)} (clean {fmt_score(r['clean'], task)}, {r['n_cases']} cases); "
                         f"mCE = {fmt_percent(r['mce'])} of the clean score is lost on average, most under "
                         f"{r['worst']}.")
        figures.append({"model": r["model"], "png": severity_figure(curves, r["model"], what)})
        wide = curves[curves["model"] == r["model"]].pivot_table(index="perturbation", columns="severity",
                                                                 values="score")
        e = errors[errors["model"] == r["model"]].set_index("perturbation")
        table_rows = [[pert, e.loc[pert, "corruption"], *[fmt_score(wide.loc[pert].get(float(s), np.nan), task)
                                                          for s in [0, *severities]],
                       fmt_score(e.loc[pert, "mean"], task), fmt_percent(e.loc[pert, "ce"])] for pert in wide.index]
        tables.append({"caption": f"{r['model']}: {what} per corruption and severity (severity 0 = clean)",
                       "headers": ["entry", "corruption", "clean", *[f"s{s}" for s in severities], "mean",
                                   "CE"], "rows": table_rows})
    head = {"caption": "", "headers": ["model", "clean", "mean over corruptions × severities", "mCE",
                                       "largest CE", "corruptions", "cases"],
            "rows": [[r["model"], fmt_score(r["clean"], tasks.get(r["model"], "")),
                      fmt_score(r["mean"], tasks.get(r["model"], "")), fmt_percent(r["mce"]), r["worst"],
                      r["n_corruptions"], r["n_cases"]] for _, r in summary.iterrows()]}
    thumbnails, case = thumbnails_figure(Path(results_dir), sorted(rows["perturbation"].unique()), severities)
    return {"sentences": sentences, "summary": head, "curves": figures, "tables": tables, "thumbnails": thumbnails,
            "thumbnail_case": case}
