"""Claim 1 (seed 000, VAFA, Hanif et al. MICCAI 2023): VAFA hurts more than voxel attacks at comparable imperceptibility.

Published (UNETR on Synapse, Dice with background): clean 74.3; PGD, FGSM and BIM at L-inf
4/255 leave 62.7, 62.8 and 62.8; VAFA-3D at q_max 20 (32³ blocks, SSIM term) leaves 32.2
with SSIM above 0.9.

Ours: the demo UNet trained with ``standard`` (each training seed), attacked on two test
cases with PGD-20, FGSM and BIM-20 at 4/255 (step 0.01 of the range, as the published
torchattacks calls) and ``vafa3d`` with its published preset at q_max 20, 32³ blocks and
20 steps, scored with background (the published protocol); the strongest protocol takes per
case the worst of those voxel attacks and the short segmentation ensemble (3 steps a
member) at 4/255, scored without background, against VAFA, and reports the SSIM of VAFA's
images. One grid serves both: it scores with background, and the
foreground Dice comes from its per-class scores. The effect is, per case and seed, the voxel
worst case's foreground Dice minus VAFA's (positive: VAFA hurts more); margin 0.02 Dice.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medrobust.reproduce.claims import CLAIMS, ClaimContext, ClaimResult
from medrobust.reproduce.page import effect_figure
from medrobust.reproduce.verdict import bootstrap_effect, verdict

EPS = 4.0
Q_MAX = 20.0
BLOCK, QUICK_BLOCK = 32, 8  # the published 32³; the quick volume (about 24³ voxels) takes 8³
STEPS, ENSEMBLE_STEPS = 20, 3  # VAFA, PGD and BIM as published; the ensemble's members short
CASES = 2  # test cases at demo scale: ~25 s of attacks per case on 2 free cores, 5x that on busy ones
STEP = 2.55  # the published alpha 0.01 of a [0, 1] range, in 1/255
MARGIN = 0.02
SSIM_PUBLISHED = 0.9  # VAFA's images stay above it in the paper
VOXEL = ("pgd", "fgsm", "bim")
ENSEMBLE = "seg-ensemble-short"


def vafa_entry(ctx: ClaimContext) -> dict[str, Any]:
    """The grid entry of VAFA-3D with its published preset at q_max 20 (tiny blocks and 2 steps when quick).

    Args:
        ctx: the claim's context.

    Returns:
        A ``perturbations:`` entry labelled ``vafa3d``.

    Example:
        >>> from pathlib import Path
        >>> vafa_entry(ClaimContext(Path("out"), Path("models"), quick=True))["options"]
        {'preset': 'published', 'block_size': [8, 8, 8], 'steps': 2}
    """
    block, steps = (QUICK_BLOCK, 2) if ctx.quick else (BLOCK, STEPS)
    return {"attack": "vafa3d", "norm": "dct", "eps": [Q_MAX], "eps_unit": "1/255",
            "options": {"preset": "published", "block_size": [block] * 3, "steps": steps}}


def _foreground(per_class: dict[str, float]) -> float:
    """Mean Dice of the classes after the first (the background), NaN skipped; 1.0 when none is defined."""
    values = np.asarray(list(per_class.values())[1:], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else 1.0


def case_dice(df: pd.DataFrame, *, background: bool) -> pd.DataFrame:
    """Per (model, case) the clean Dice and the Dice under each perturbation, with or without background.

    Args:
        df: the rows of a grid scored with ``include_background: true`` (the first per-class
            entry is the background).
        background: keep the background in the mean (the rows' scores) or drop it (the mean
            of the other per-class scores).

    Returns:
        Columns model, case_id, ``clean`` and one per perturbation label (its lowest Dice over eps).

    Example:
        >>> rows = pd.DataFrame([{"model": "m", "case_id": "a", "kind": "attack", "perturbation": p,
        ...                       "clean_score": 0.9, "adv_score": s, "clean_per_class": {"bg": 1.0, "gm": 0.8},
        ...                       "adv_per_class": {"bg": 0.98, "gm": f}} for p, s, f in (("pgd", 0.7, 0.4),)])
        >>> case_dice(rows, background=False)[["clean", "pgd"]].values.tolist()
        [[0.8, 0.4]]
    """
    rows = df[df["kind"] == "attack"]
    adv = rows["adv_score"] if background else rows["adv_per_class"].map(_foreground)
    clean = rows["clean_score"] if background else rows["clean_per_class"].map(_foreground)
    keys = [rows["model"], rows["case_id"]]
    table = adv.groupby([*keys, rows["perturbation"]]).min().unstack("perturbation")
    table["clean"] = clean.groupby(keys).first()
    table.columns.name = None
    return table.rename_axis(["model", "case_id"]).reset_index()


def voxel_worst(table: pd.DataFrame) -> pd.Series:
    """Per row of :func:`case_dice` the lowest Dice of the voxel attacks and the short ensemble.

    Args:
        table: columns ``pgd``, ``fgsm``, ``bim`` and ``seg-ensemble-short``.

    Returns:
        The per-row minimum (the effect is this minus the ``vafa3d`` column).
    """
    return table[[*VOXEL, ENSEMBLE]].min(axis=1)


def _steps(ctx: ClaimContext) -> tuple[int, int]:
    """(steps of PGD and BIM, steps of each ensemble member): a few when quick."""
    return (2, 1) if ctx.quick else (STEPS, ENSEMBLE_STEPS)


def _perturbations(ctx: ClaimContext) -> list[dict[str, Any]]:
    """The grid's entries: the published voxel attacks, the short ensemble and VAFA."""
    steps, ensemble_steps = _steps(ctx)
    linf = {"eps": [EPS], "eps_unit": "1/255", "norm": "linf"}
    return [
        {"attack": "pgd", **linf, "options": {"steps": steps, "step_size": STEP, "loss": "dice_ce"}},
        {"attack": "fgsm", **linf, "options": {"loss": "dice_ce"}},
        {"attack": "bim", **linf, "options": {"steps": steps, "step_size": STEP, "loss": "dice_ce"}},
        {"attack": "seg-ensemble", "name": ENSEMBLE, **linf, "options": {"steps": ensemble_steps}},
        vafa_entry(ctx),
    ]


@CLAIMS.register("vafa-hurts-more", order=1)
def run(ctx: ClaimContext) -> ClaimResult:
    """Train, attack and judge claim 1 (see the module docstring).

    Args:
        ctx: the claim's context.

    Returns:
        Its :class:`ClaimResult`.
    """
    data = ctx.segmentation_data()
    arch, kwargs, train = ctx.segmenter()
    frames = []
    for seed in range(ctx.seeds):
        config = train.model_copy(update={"seed": seed})
        models = {f"standard-s{seed}": ctx.train(data, arch, model_kwargs=kwargs, config=config)}
        df = ctx.evaluate(f"grid-seed{seed}", models, _perturbations(ctx), data, include_background=True,
                          metrics=["dice", "ssim"], max_cases=1 if ctx.quick else CASES)
        with_bg, fg = case_dice(df, background=True), case_dice(df, background=False)
        merged = with_bg.merge(fg, on=["model", "case_id"], suffixes=("_bg", ""))
        ssim = df[df["kind"] == "attack"].groupby(["model", "case_id", "perturbation"])["ssim"].first().unstack()
        merged = merged.merge(ssim[["pgd", "vafa3d"]].add_prefix("ssim_").reset_index(), on=["model", "case_id"])
        merged["seed"] = seed
        frames.append(merged)
    table = pd.concat(frames, ignore_index=True)
    table["voxel_worst"] = voxel_worst(table)
    effect = bootstrap_effect((table["voxel_worst"] - table["vafa3d"]).to_numpy(), margin=MARGIN, unit="Dice",
                              seeds=table["seed"].to_numpy())
    mean = table.mean(numeric_only=True)
    options = vafa_entry(ctx)["options"]
    block, vafa_steps = options["block_size"][0], options["steps"]
    steps, ensemble_steps = _steps(ctx)
    labels = ["clean", "PGD", "FGSM", "BIM", "ensemble", "VAFA"]
    columns = ["clean", *VOXEL, ENSEMBLE, "vafa3d"]
    figure = effect_figure(effect, labels, [float(mean[c]) for c in columns], "foreground Dice (mean over cases)")
    return ClaimResult(
        claim="vafa-hurts-more", title="VAFA hurts more than voxel attacks",
        source="seed 000 (VAFA/VAFT, Hanif et al., MICCAI 2023)",
        statement="At comparable imperceptibility (SSIM above 0.9), the frequency attack VAFA lowers Dice far more "
                  "than the voxel attacks PGD, FGSM and BIM at 4/255.",
        published="UNETR on Synapse, DSC with background: clean 74.3; PGD 62.7, FGSM 62.8, BIM 62.8 (4/255); "
                  "VAFA 32.2 (q_max 20, 32³ blocks, SSIM > 0.9)",
        ours_published=f"Dice with background: clean {mean['clean_bg']:.3f}; PGD {mean['pgd_bg']:.3f}, FGSM "
                       f"{mean['fgsm_bg']:.3f}, BIM {mean['bim_bg']:.3f}; VAFA {mean['vafa3d_bg']:.3f} (SSIM "
                       f"{mean['ssim_vafa3d']:.3f})",
        published_protocol=f"PGD-{steps}, FGSM and BIM-{steps} (step 0.01 of the range, Dice+CE) at L-inf "
                           f"{EPS:g}/255; VAFA-3D published preset, q_max {Q_MAX:g}, {block}³ blocks, {vafa_steps} "
                           "steps, SSIM term; Dice with background",
        ours_strongest=f"foreground Dice: clean {mean['clean']:.3f}; voxel worst case {mean['voxel_worst']:.3f} "
                       f"(SSIM of PGD's images {mean['ssim_pgd']:.3f}); VAFA {mean['vafa3d']:.3f} (SSIM of VAFA's "
                       f"images {mean['ssim_vafa3d']:.3f})",
        strongest_protocol=f"per case the worst of PGD, FGSM, BIM and the segmentation ensemble with "
                           f"{ensemble_steps} steps a member at {EPS:g}/255, against VAFA as above; "
                           "iterates kept by Dice; background excluded",
        effect=effect, effect_meaning="per case and seed: the voxel worst case's foreground Dice minus VAFA's",
        verdict=verdict(effect, smoke=ctx.quick), figure=figure, results=list(ctx.results),
        notes=[f"{ctx.seeds} training seed(s); {len(table) // max(ctx.seeds, 1)} test cases per seed",
               f"scaled to the time budget: {CASES} test cases, the ensemble {ensemble_steps} steps a member",
               "the demo's 3D UNet on the MNI152 brain-tissue set, not UNETR on Synapse: compare the direction, "
               "not the numbers; VAFA's L-inf change is far above 4/255, its budget is imperceptibility (SSIM)",
               *([f"VAFA's images have a mean SSIM of {mean['ssim_vafa3d']:.2f} here, not above 0.9 as published "
                  f"(the voxel attacks' {mean['ssim_pgd']:.2f}): the comparison is not at comparable "
                  "imperceptibility"] if mean["ssim_vafa3d"] < SSIM_PUBLISHED else [])])
