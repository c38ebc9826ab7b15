"""``reproduction.html``: one section per claim — published, ours, strongest, verdict, interval, plot.

Rendered with the report's machinery (jinja2 template beside ``report.html``, figures as
inline PNGs from :mod:`medrobust.report.plots`), written atomically.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import torch

from medrobust.data.io import atomic_path
from medrobust.report.plots import new_figure, to_png
from medrobust.reproduce.claims import ClaimResult
from medrobust.reproduce.verdict import RULE, Effect

PAGE_NAME = "reproduction.html"
_TEMPLATES = Path(__file__).resolve().parents[1] / "report" / "templates"


def effect_figure(effect: Effect, labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Bars of a claim's compared scores, and its effect with the interval and margin.

    Args:
        effect: the effect of the verdict.
        labels: the compared settings (e.g. ``["PGD", "VAFA"]``).
        values: their mean scores.
        title: the left panel's title (the score's name).

    Returns:
        The figure as a base64 PNG.

    Example:
        >>> png = effect_figure(Effect(0.1, 0.05, 0.15, 10, 1, 0.02, "Dice"), ["a", "b"], [0.7, 0.6], "Dice")
        >>> png[:8]
        'iVBORw0K'
    """
    fig, (left, right) = new_figure(1, 2, figsize=(8.0, 2.8))
    left.bar(list(labels), list(values), color="#1f6feb")
    left.set_title(title, fontsize=10)
    left.tick_params(axis="x", labelrotation=20, labelsize=8)
    right.errorbar([effect.mean], [0], xerr=[[effect.mean - effect.low], [effect.high - effect.mean]], fmt="o",
                   color="#16202c", capsize=4)
    right.axvline(0, color="#b42318", lw=1)
    right.axvline(effect.margin, color="#5b6b7c", lw=1, ls="--")
    right.set_yticks([])
    right.set_title(f"effect ({effect.unit}), 95% interval; 0 and the margin", fontsize=10)
    return to_png(fig)


def machine() -> str:
    """The machine a run measured its times on, in words (CPU cores, torch threads, GPU).

    Returns:
        E.g. ``"2 CPU cores, torch 2.13.0 on 2 threads, no GPU"``.

    Example:
        >>> f"{os.cpu_count()} CPU cores" in machine()
        True
    """
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__} on {torch.get_num_threads()} threads, {gpu}"


def write_page(results: Sequence[ClaimResult], out: Path, *, scale: str, quick: bool, seconds: float) -> Path:
    """Render ``out/reproduction.html`` from the claims' results.

    Args:
        results: the claims, in page order.
        out: the folder.
        scale: ``demo`` or ``full``.
        quick: a smoke run.
        seconds: the whole run's wall time.

    Returns:
        The page's path.
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("reproduction.html").render(
        claims=results, rule=RULE, scale=scale, quick=quick, minutes=seconds / 60, machine=machine(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    path = out / PAGE_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
