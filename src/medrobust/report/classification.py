"""The report's classification sections: metrics, confusion matrices, Grad-CAM, ensembles.

Built from the store alone: the runs' ``label``, ``clean_pred`` / ``adv_pred``,
``clean_probs`` / ``adv_probs`` (the softmax vector; AUROC for any class count) and
``clean_prob`` / ``adv_prob`` (the true class's probability), the Grad-CAM files the grid
keeps beside its examples, and the ``ensemble_runs`` table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes

from medrobust import metrics
from medrobust.evaluation import robustness as rb
from medrobust.evaluation.ensembles import SCORINGS, ensemble_table, load_ensemble_runs
from medrobust.evaluation.examples import EXAMPLES_DIR, select_examples
from medrobust.evaluation.explain import TOP_FRACTION, cam_path, load_example_cams
from medrobust.report.formatting import fmt_percent, norm_label
from medrobust.report.plots import new_figure, to_png

SURVIVES = 0.10  # the hard vote survives when the joint attack costs it at most 10 accuracy points
STORE_NAME = "results.sqlite"


def _eps(eps: float, unit: str) -> str:
    return {"1/255": f"{eps:g}/255", "HU": f"{eps:g} HU"}.get(unit, f"{eps:g} ({unit})")


def _table(headers: list[str], rows: list[list[Any]], caption: str = "") -> dict[str, Any]:
    return {"headers": headers, "rows": rows, "caption": caption}


def _scores(rows: pd.DataFrame, which: str, k: int) -> list[str]:
    """Accuracy, balanced accuracy and AUROC of ``which`` predictions in ``rows``, as table cells.

    ``which`` is "clean" or "adv"; AUROC is the one-vs-rest mean over classes. It needs every row's class
    probabilities (``*_probs``); stores from before they were kept give it for two classes
    from the true-class probability, else "-".
    """
    labels = rows["label"].to_numpy(int)
    y = torch.tensor(labels, dtype=torch.long)
    pred = torch.tensor(rows[f"{which}_pred"].to_numpy(int), dtype=torch.long)
    out = [fmt_percent(metrics.accuracy(pred, y)), fmt_percent(metrics.balanced_accuracy(pred, y, k))]
    probs = rows[f"{which}_probs"] if f"{which}_probs" in rows else pd.Series([None] * len(rows))
    p_true = rows[f"{which}_prob"].to_numpy(float)
    if len(rows) and all(isinstance(p, list) and len(p) == k for p in probs):
        out.append(f"{metrics.auroc(torch.tensor(list(probs), dtype=torch.float64), y, from_logits=False):.3f}")
    elif k == 2 and not np.isnan(p_true).any():
        p1 = torch.tensor(np.where(labels == 1, p_true, 1 - p_true), dtype=torch.float64)
        out.append(f"{metrics.auroc(torch.stack([1 - p1, p1], 1), y, from_logits=False):.3f}")
    else:
        out.append("-")
    return out


def _worst_rows(g: pd.DataFrame) -> pd.DataFrame:
    """Per case the run that hurt most: lowest score, then lowest true-class probability."""
    return g.sort_values(["case_id", "adv_score", "adv_prob"]).drop_duplicates("case_id")


def _confusion(labels: np.ndarray, preds: np.ndarray, classes: list[str], caption: str) -> dict[str, Any]:
    cm = metrics.confusion_matrix(torch.tensor(preds, dtype=torch.long), torch.tensor(labels, dtype=torch.long),
                                  len(classes))
    return _table(["true \\ predicted", *classes], [[c, *map(int, row)] for c, row in zip(classes, cm.tolist())],
                  caption)


def metrics_and_confusion(df: pd.DataFrame, models: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict]]:
    """Metrics table and confusion matrices per classification model.

    The table has the clean scores, each attack and the worst case at the largest eps; the
    confusion matrices are those of the clean and the worst-case predictions.
    """
    rows, confusion = [], []
    for model in sorted(df["model"].unique()):
        g = df[df["model"] == model]
        group = rb.main_group(g, model)
        if group is None:
            continue
        classes = list(models.get(model, {}).get("classes") or [str(i) for i in range(int(g["label"].max()) + 1)])
        k = len(classes)
        clean = g.drop_duplicates("case_id")
        lab = clean["label"].to_numpy(int)
        rows.append([model, "clean", len(clean), *_scores(clean, "clean", k)])
        sel = g[(g["norm"] == group[0]) & (g["eps_unit"] == group[1])]
        top = sel["eps_stated"].max()
        at_top = sel[sel["eps_stated"] == top]
        for pert, a in at_top.groupby("perturbation", sort=True):
            rows.append([model, f"{pert} at {norm_label(group[0])} eps {_eps(top, group[1])}", len(a),
                         *_scores(a, "adv", k)])
        worst = _worst_rows(at_top)
        where = f"{norm_label(group[0])} eps {_eps(top, group[1])}"
        rows.append([model, f"worst case over attacks at {where}", len(worst),
                     *_scores(worst, "adv", k)])
        confusion.append({"model": model, "tables": [
            _confusion(lab, clean["clean_pred"].to_numpy(int), classes, f"{model}: clean"),
            _confusion(worst["label"].to_numpy(int), worst["adv_pred"].to_numpy(int), classes,
                       f"{model}: worst case over attacks at {where}")]})
    headers = ["model", "images", "cases", "accuracy", "balanced accuracy", "AUROC"]
    return (_table(headers, rows, "balanced accuracy = mean recall over the classes; "
                   "AUROC = mean one-vs-rest AUC over the classes")
            if rows else None), confusion


def _show(ax: Axes, image: np.ndarray, volume_slice: bool, **kw: Any) -> None:
    if volume_slice:  # (x, y) plane of a RAS volume: x to the right, y up
        image = np.swapaxes(image, 0, 1)
        kw["origin"] = "lower"
    ax.imshow(image, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def gradcam_figure(cams: dict[str, Any]) -> str:
    """Clean image, clean + Grad-CAM, adversarial + Grad-CAM; the top-10% regions outlined."""
    info = cams["info"]
    lo, hi = float(info["low"]), float(info["high"])
    classes = list(info.get("classes", []))
    volume = cams["slice"] >= 0

    def grey(a: np.ndarray) -> np.ndarray:
        return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)

    def name(k: Any) -> str:
        return classes[int(k)] if int(k) < len(classes) else str(k)

    fig, axes = new_figure(1, 3, figsize=(10.5, 3.6))
    _show(axes[0], grey(cams["image"]), volume, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"clean (label {name(info['label'])})", fontsize=10)
    for ax, img, cam, title in ((axes[1], cams["image"], cams["cam_clean"], f"clean → {name(info['pred_clean'])}"),
                                (axes[2], cams["adversarial"], cams["cam_adv"], f"adversarial → {name(info['pred_adv'])}")):
        _show(ax, grey(img), volume, cmap="gray", vmin=0, vmax=1)
        _show(ax, cam, volume, cmap="jet", vmin=0, vmax=1, alpha=0.45)
        cut = np.quantile(cam, 1 - TOP_FRACTION)
        if cam.max() > cut:  # a flat map has no top region to outline
            ax.contour(np.swapaxes(cam, 0, 1) if volume else cam, levels=[cut], colors="white", linewidths=1.2)
        ax.set_title(f"Grad-CAM, {title}", fontsize=10)
    return to_png(fig)


def gradcam_panels(results_dir: Path, df: pd.DataFrame, k: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Grad-CAM figures of the worst cases (the report's examples) and a mean-IoU line per model."""
    panels: list[dict[str, Any]] = []
    ious: dict[str, list[float]] = {}
    for _, r in select_examples(df, k).iterrows():
        path = cam_path(results_dir / EXAMPLES_DIR / r["example"])
        if not path.is_file():
            continue
        cams = load_example_cams(path)
        ious.setdefault(r["model"], []).append(cams["iou"])
        panels.append({"png": gradcam_figure(cams), "caption": (
            f"{r['model']} · case {r['case_id']} · {r['perturbation']} at {norm_label(r['norm'] or 'linf')} eps "
            f"{_eps(r['eps_stated'], r['eps_unit'])} · IoU of the top-{100 * TOP_FRACTION:g}% regions, clean vs "
            f"adversarial: {cams['iou']:.2f} · layer {cams['layer']}")})
    lines = [f"{m}: mean IoU of the clean and adversarial top-{100 * TOP_FRACTION:g}% Grad-CAM regions over the "
             f"{len(v)} worst case{'s' * (len(v) != 1)} shown: {np.mean(v):.2f} (1 = the attack left the evidence "
             "where it was; 0 = it moved it elsewhere)." for m, v in sorted(ious.items())]
    return panels, lines


def _survival(t: pd.DataFrame, model: str, pert: str, k: int) -> str:
    """Plain statement: does the hard vote survive the strongest joint attack at the largest eps?"""
    clean = t[(t["model"] == model) & (t["setting"] == "clean")]["hard_vote"]
    a = t[(t["model"] == model) & (t["perturbation"] == pert)]
    top = a[a["eps_stated"] == a["eps_stated"].max()]
    joint = top[top["setting"].str.startswith("joint")].sort_values("hard_vote").iloc[0]
    base = float(clean.iloc[0]) if len(clean) else float("nan")
    survives = float(joint["hard_vote"]) >= base - SURVIVES
    transfer = top[top["setting"].str.startswith("transfer")].sort_values("hard_vote")
    held = [float(g["eps_stated"].iloc[0]) for _, g in a.groupby("eps_stated")
            if g[g["setting"].str.startswith("joint")]["hard_vote"].min() >= base - SURVIVES]
    text = (f"{'Yes' if survives else 'No'}: the hard vote of {model} "
            f"{'survives' if survives else 'does not survive'} the joint attack. Under {pert} through the "
            f"{joint['setting'].removeprefix('joint (').removesuffix(')')} at {norm_label(joint['norm'])} eps "
            f"{_eps(joint['eps_stated'], joint['eps_unit'])}, its accuracy goes from {fmt_percent(base)} (clean) to "
            f"{fmt_percent(joint['hard_vote'])} over {int(joint['n_cases'])} cases (chance {fmt_percent(1 / k)})")
    if len(transfer):
        text += (f"; the strongest transfer attack ({transfer.iloc[0]['setting']}) leaves it "
                 f"{fmt_percent(transfer.iloc[0]['hard_vote'])}")
    text += (f". It holds up to eps {_eps(max(held), joint['eps_unit'])}" if held and not survives else "") + (
        f". Surviving means losing at most {100 * SURVIVES:g} accuracy points.")
    return text


def ensemble_context(store_path: Path, models: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """One table per (ensemble, attack): clean, transfer and joint rows at every eps; the sentences."""
    t = ensemble_table(load_ensemble_runs(store_path))
    tables, sentences = [], []
    for model in sorted(t["model"].unique()):
        k = len(models.get(model, {}).get("classes") or [0, 1])
        clean = t[(t["model"] == model) & (t["setting"] == "clean")]
        for pert in sorted(set(t[t["model"] == model]["perturbation"]) - {"clean"}):
            a = pd.concat([clean, t[(t["model"] == model) & (t["perturbation"] == pert)]])
            rows = [[r["setting"], "-" if r["setting"] == "clean" else _eps(r["eps_stated"], r["eps_unit"]),
                     int(r["n_cases"]), *[fmt_percent(r[s]) for s in SCORINGS],
                     ", ".join(f"{n} {fmt_percent(v)}" for n, v in r["members"].items())] for _, r in a.iterrows()]
            tables.append(_table(["images", "eps", "cases", "hard vote", "soft vote", "mean logits", "each member alone"],
                                 rows, f"{model} under {pert}: accuracy of the ensemble's three votes"))
            sentences.append(_survival(t, model, pert, k))
    return tables, sentences


def classification_context(results_dir: str | Path, df: pd.DataFrame, models: dict[str, Any],
                           examples: int = 3) -> dict[str, Any] | None:
    """Everything ``_classification.html`` shows, or None when the store has no classifier."""
    results_dir = Path(results_dir)
    cls = rb.attacks_only(df[df["task"] == "classification"]) if len(df) else df
    ens_tables, ens_sentences = ensemble_context(results_dir / STORE_NAME, models)
    if cls.empty and not ens_tables:
        return None
    table, confusion = metrics_and_confusion(cls, models) if len(cls) else (None, [])
    panels, iou_lines = gradcam_panels(results_dir, cls, examples) if len(cls) else ([], [])
    return {"metrics": table, "confusion": confusion, "gradcam": panels, "gradcam_summary": iou_lines,
            "ensembles": ens_tables, "ensemble_sentences": ens_sentences}
