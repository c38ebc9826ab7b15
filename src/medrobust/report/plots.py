"""Report figures (matplotlib) returned as base64 PNG strings for ``<img src>``.

Figures are ``matplotlib.figure.Figure`` objects drawn on their own Agg canvas
(:func:`new_figure`): no pyplot state, and the backend of the process is left as it was.

- :func:`curves_figure`: score vs eps per attack and the worst case over attacks, one
  panel per budget group (norm, eps unit) of a model.
- :func:`example_figure`: clean slice with the label outlined, adversarial slice, the
  perturbation amplified x10, and the clean and adversarial predictions overlaid.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text

AMPLIFY = 10.0
# tab10 without its first colour, blue (background looks grey): an integer picks the colour of that index
_CLASS_COLOURS = ListedColormap(matplotlib.colormaps["tab10"](np.arange(1, 10)))


PLOT_NORMS = {"linf": "L-inf", "l2": "L2", "dct": "frequency (VAFA q_max)"}


def eps_label(unit: str) -> str:
    """Axis label of a stated eps unit."""
    return {"1/255": "eps (x/255 of the valid range)", "HU": "eps (HU)", "raw": "eps (raw intensity units)",
            "model": "eps (model units)"}.get(unit, f"eps ({unit})")


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
               squeeze: bool = True) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas and its axes, as ``plt.subplots`` without pyplot.

    Args:
        nrows: rows of the grid of axes.
        ncols: columns of the grid of axes.
        figsize: width and height in inches.
        squeeze: as in ``Figure.subplots``: a single ``Axes`` or a 1D array where possible.

    Returns:
        The figure and its axes (an ``Axes`` or a numpy array of them).

    Example:
        >>> fig, axes = new_figure(1, 2, figsize=(4, 2))
        >>> len(axes), to_png(fig)[:8]  # base64 of the PNG signature
        (2, 'iVBORw0K')
    """
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def to_png(fig: Figure, **layout: Any) -> str:
    """Lay a figure out (``tight_layout(**layout)``), render it; return its PNG as base64 text.

    Every text is drawn as written: a model, attack or class name holding ``$`` is not
    read as mathtext (an unbalanced ``$`` would stop the report).

    Args:
        fig: the figure (from :func:`new_figure`).
        **layout: arguments of ``Figure.tight_layout`` (``pad``, ``rect``).

    Returns:
        The PNG, base64-encoded.

    Example:
        >>> fig, ax = new_figure(figsize=(2, 2))
        >>> _ = ax.set_title("model $" + chr(92) + "foo{$")
        >>> to_png(fig, pad=0.3)[:8]
        'iVBORw0K'
    """
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    fig.tight_layout(**layout)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curves_figure(curves: pd.DataFrame, worst: pd.DataFrame, model: str, score_label: str) -> str:
    """Score vs eps for ``model``: a thin line per attack, a thick black worst-case line.

    ``curves`` / ``worst`` are :func:`attack_curves` / :func:`worst_case_curve` frames.
    """
    mine = curves[curves["model"] == model]
    groups = sorted({(n, u) for n, u in zip(mine["norm"], mine["eps_unit"])})
    fig, axes = new_figure(1, max(len(groups), 1), figsize=(5.2 * max(len(groups), 1), 3.6), squeeze=False)
    for ax, (norm, unit) in zip(axes[0], groups):
        sel = mine[(mine["norm"] == norm) & (mine["eps_unit"] == unit)]
        for pert, c in sel.groupby("perturbation", sort=True):
            ax.plot(c["eps_stated"], c["score"], marker="o", lw=1.4, ms=4, label=pert)
        w = worst[(worst["model"] == model) & (worst["norm"] == norm) & (worst["eps_unit"] == unit)]
        if len(w):
            ax.plot(w["eps_stated"], w["score"], color="black", lw=2.6, ls="--", marker="s", ms=5,
                    label="worst case")
        ax.set_xlabel(eps_label(unit))
        ax.set_ylabel(score_label)
        ax.set_title(f"{model}: {PLOT_NORMS.get(norm, norm)} budgets")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return to_png(fig)


def _show(ax: Axes, image: np.ndarray, volume_slice: bool, **kw: Any) -> AxesImage:
    if volume_slice:  # (x, y) plane of a RAS volume: x to the right, y up
        image = np.swapaxes(image, 0, 1)
        kw["origin"] = "lower"
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(image, interpolation="nearest", **kw)


def _overlay(ax: Axes, labels: np.ndarray, volume_slice: bool) -> None:
    masked = np.ma.masked_where(labels <= 0, labels)
    # label k -> colour k-1 of the 9-colour map (the legend uses the same indices)
    _show(ax, masked, volume_slice, cmap=_CLASS_COLOURS, vmin=0.5, vmax=_CLASS_COLOURS.N + 0.5, alpha=0.5)


def example_figure(example: dict[str, Any]) -> str:
    """Five panels of one saved example (see :func:`medrobust.evaluation.examples.save_example`)."""
    info = example["info"]
    seg = example["label"].ndim > 0
    volume_slice = int(info.get("slice", -1)) >= 0
    lo, hi = float(info["low"]), float(info["high"])
    grey = {"cmap": "gray", "vmin": lo, "vmax": hi}
    img, adv = example["image"], example["adversarial"]
    classes = list(info.get("classes", []))
    fig, axes = new_figure(1, 5, figsize=(15, 3.4))
    delta = (adv - img) * AMPLIFY
    half = (hi - lo) / 2
    panels = [("clean", img), ("adversarial", adv)]
    for ax, (title, a) in zip(axes[:2], panels):
        _show(ax, a if a.ndim == 2 else np.clip((a - lo) / (hi - lo), 0, 1), volume_slice, **grey)
        ax.set_title(title)
    if seg:
        _overlay(axes[0], example["label"], volume_slice)
        axes[0].set_title("clean + reference label")
    im = _show(axes[2], delta if delta.ndim == 2 else delta.mean(-1), volume_slice, cmap="seismic",
               vmin=-half, vmax=half)
    axes[2].set_title(f"perturbation x{AMPLIFY:g}")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03, label="model units")
    for ax, key, base, title in ((axes[3], "pred_clean", img, "prediction (clean)"),
                                 (axes[4], "pred_adv", adv, "prediction (adversarial)")):
        _show(ax, base if base.ndim == 2 else np.clip((base - lo) / (hi - lo), 0, 1), volume_slice, **grey)
        if seg:
            _overlay(ax, example[key], volume_slice)
            ax.set_title(title)
        else:
            k = int(example[key])
            ax.set_title(f"{title}:\n{classes[k] if k < len(classes) else k}", fontsize=9)
    if seg and classes:
        handles = [Rectangle((0, 0), 1, 1, color=_CLASS_COLOURS(i)) for i in range(len(classes) - 1)]
        fig.legend(handles, classes[1:], loc="lower center", ncol=len(classes) - 1, fontsize=8, frameon=False)
    return to_png(fig, rect=(0, 0.06, 1, 1))
