"""``write_report(results_dir)``: one self-contained ``report.html`` from a results folder.

Reads only ``results.sqlite`` and the example files under ``examples/`` (design.md
section 8); figures are embedded as base64 PNG, CSS is inline, nothing is fetched.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from medrobust.evaluation import robustness as rb
from medrobust.evaluation.core import PER_CHANNEL_NOTE
from medrobust.evaluation.examples import EXAMPLES_DIR, load_example, select_examples
from medrobust.evaluation.store import ResultStore
from medrobust.report.certify_section import certify_context
from medrobust.report.classification import classification_context
from medrobust.report.corruption_section import corruption_context
from medrobust.report.formatting import fmt_eps, fmt_score, norm_label, score_name
from medrobust.report.plots import curves_figure, example_figure
from medrobust.report.summary import summarise

STORE_NAME = "results.sqlite"
REPORT_NAME = "report.html"


def _num(value: float, spec: str) -> str:
    return "-" if pd.isna(value) else format(value, spec)


def _table(headers: list[str], rows: list[list[Any]], caption: str = "") -> dict[str, Any]:
    return {"headers": headers, "rows": rows, "caption": caption}


def _methods(df: pd.DataFrame) -> dict[str, Any]:
    """Each attack entry as it ran (steps, loss, restarts, members, iterate rule, target), per model."""
    rows = df[df["kind"] == "attack"]
    if "method" not in rows:
        return _table([], [])
    seen = rows.sort_values("eps_stated").drop_duplicates(["model", "perturbation"], keep="last")
    return _table(["model", "perturbation", "attack as run", "target"],
                  [[r["model"], r["perturbation"], r["method"] or "-", r.get("target") or "-"]
                   for _, r in seen.iterrows()])


def _models(models: dict[str, Any]) -> dict[str, Any]:
    """Each model as it was loaded: source, architecture, the spacing its data was resampled to, notes."""
    rows = []
    for name, model in sorted(models.items()):
        info = model.get("info") or {}
        spacing = info.get("spacing")
        rows.append([name, info.get("architecture") or "-", info.get("checkpoint") or "-",
                     " x ".join(f"{float(s):g}" for s in spacing) + " mm" if spacing else "as stored",
                     " ".join(f"{n}." for n in info.get("notes") or []) or "-"])
    return _table(["model", "architecture", "source", "data resampled to", "notes"], rows)


def _worst_case_tables(df: pd.DataFrame, tasks: dict[str, str]) -> list[dict[str, Any]]:
    """Per model and budget group: worst case beside every single attack at each eps."""
    curves, worst = rb.attack_curves(df), rb.worst_case_curve(df)
    tables = []
    for key, w in worst.groupby(rb.GROUP, sort=True):
        model, norm, unit = (str(k) for k in key)
        task = tasks.get(model, "segmentation")
        c = curves[(curves["model"] == model) & (curves["norm"] == norm) & (curves["eps_unit"] == unit)]
        wide = c.pivot_table(index="eps_stated", columns="perturbation", values="score")
        rows = []
        for _, r in w.iterrows():
            attack_cells = [fmt_score(wide.loc[r["eps_stated"], a], task) if r["eps_stated"] in wide.index else "-"
                            for a in wide.columns]
            rows.append([fmt_eps(r["eps_stated"], unit), int(r["n_cases"]), fmt_score(r["score"], task), *attack_cells])
        caption = f"{model}, {norm_label(norm)} budgets: {score_name(task)}; eps 0 is the clean score"
        tables.append(_table([f"eps ({unit})", "cases", "worst case", *wide.columns], rows, caption))
    return tables


def _examples(results_dir: Path, df: pd.DataFrame, k: int) -> list[dict[str, Any]]:
    out = []
    for _, r in select_examples(df[df["kind"] == "attack"], k).iterrows():  # corruptions have their section
        path = results_dir / EXAMPLES_DIR / r["example"]
        if not path.is_file():
            continue
        task = r["task"]
        out.append({"png": example_figure(load_example(path)),
                    "caption": (f"{r['model']} · case {r['case_id']} · {r['perturbation']} at "
                                f"{norm_label(r['norm'] or 'linf')} eps {fmt_eps(r['eps_stated'], r['eps_unit'])} · "
                                f"{score_name(task)} {fmt_score(r['clean_score'], task)} → "
                                f"{fmt_score(r['adv_score'], task)}")})
    return out


def build_context(results_dir: str | Path) -> dict[str, Any]:
    """Everything the template shows, computed from the store and the example files."""
    results_dir = Path(results_dir)
    path = results_dir / STORE_NAME
    if not path.is_file():
        raise ValueError(f"results_dir: no {STORE_NAME} in {results_dir}; run `medrobust evaluate` first")
    with ResultStore(path) as store:
        df, models, checks, meta = store.to_dataframe(), store.models(), store.checks_dataframe(), store.meta()
    config = json.loads(meta.get("config_json", "{}"))
    tasks = {m: v["task"] for m, v in models.items()}
    tasks.update({m: t for m, t in zip(df["model"], df["task"]) if m not in tasks})
    ctx: dict[str, Any] = {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                           "config_hash": meta.get("config_hash", "?"), "n_runs": len(df),
                           "config_json": json.dumps(config, indent=2), "summaries": [], "curves": [],
                           "headline": None, "methods": None, "auc": None, "worst": [], "per_class": None, "quality": None, "checks": None,
                           "examples": []}
    ctx["include_background"] = bool(config.get("include_background", False))
    ctx["models"] = _models(models)
    ctx["per_channel_off"] = config.get("per_channel_ranges") is False
    ctx["per_channel_runs"] = (int(df["method"].fillna("").str.contains(PER_CHANNEL_NOTE, regex=False).sum())
                               if "method" in df else 0)
    ctx["corruptions"] = corruption_context(results_dir, df, tasks)
    ctx["certification"] = certify_context(df, tasks) if not df.empty else None  # own section, own builder
    ctx["classification"] = classification_context(results_dir, df, models, int(config.get("examples", 3)))
    if df.empty:
        return ctx
    heads = rb.headline(df)
    worst = rb.worst_case_curve(df)
    ctx["summaries"] = [s.sentence for s in summarise(df, tasks, checks)]
    ctx["methods"] = _methods(df)
    ctx["headline"] = _table(
        ["model", "task", "budget", "clean", "worst case at largest eps", "normalised AUC (worst case)",
         "attacks", "cases", "strongest attack"],
        [[h["model"], tasks.get(h["model"], ""), f"{norm_label(h['norm'])}, eps up to {fmt_eps(h['eps'], h['eps_unit'])}",
          fmt_score(h["clean"], tasks.get(h["model"], "")), fmt_score(h["worst"], tasks.get(h["model"], "")),
          fmt_score(h["auc"], tasks.get(h["model"], "")), h["n_attacks"], h["n_cases"], h["strongest"]]
         for _, h in heads.iterrows()])
    curves = rb.attack_curves(df)
    for model in sorted(df["model"].unique()):
        ctx["curves"].append({"model": model, "png": curves_figure(curves, worst, model,
                                                                   score_name(tasks.get(model, "segmentation")))})
    auc = rb.auc_table(df)
    ctx["auc"] = _table(["model", "budget", "curve", "eps range", "normalised AUC"],
                        [[r["model"], norm_label(r["norm"]), r["curve"], f"0 to {fmt_eps(r['eps_max'], r['eps_unit'])}",
                          fmt_score(r["auc"], tasks.get(r["model"], ""))] for _, r in auc.iterrows()])
    ctx["worst"] = _worst_case_tables(df, tasks)
    pc = rb.per_class_table(df, {m: v["classes"] for m, v in models.items()})
    ctx["per_class"] = _table(["model", "budget", "eps", "class", "clean", "worst case", "cases"],
                              [[r["model"], norm_label(r["norm"]), fmt_eps(r["eps_stated"], r["eps_unit"]), r["class"],
                                fmt_score(r["clean"], tasks.get(r["model"], "")),
                                fmt_score(r["worst"], tasks.get(r["model"], "")), r["n_cases"]]
                               for _, r in pc.iterrows()])
    q = rb.quality_table(df)
    raw_unit = {m: ((v["intensity"] or {}).get("raw_unit") or "raw") for m, v in models.items()}
    ctx["quality"] = _table(["model", "attack", "eps", "SSIM", "PSNR (dB)", "achieved L∞ (raw units)",
                             "achieved L2 (raw units)", "attack time (s)"],
                            [[r["model"], r["perturbation"], fmt_eps(r["eps_stated"], r["eps_unit"]),
                              _num(r["ssim"], ".4f"), _num(r["psnr"], ".1f"),
                              f"{r['linf_raw']:.4g} {raw_unit.get(r['model'], 'raw')}",
                              f"{r['l2_raw']:.4g} {raw_unit.get(r['model'], 'raw')}",
                              f"{r['attack_seconds']:.2f}"] for _, r in q.iterrows()])
    ctx["checks"] = _table(["model", "attack", "likely masking", "reasons"],
                           [[r["model"], r["attack"], "yes" if r["likely_masking"] else "no", r["reasons"]]
                            for _, r in checks.iterrows()])
    ctx["examples"] = _examples(results_dir, df, int(config.get("examples", 3)))
    return ctx


def write_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``report.html`` (default ``results_dir/report.html``) atomically; return its path."""
    from medrobust.data.io import atomic_path  # lazy: data is a sibling part

    ctx = build_context(results_dir)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html").render(**ctx)
    path = Path(out) if out is not None else Path(results_dir) / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
