"""Claim 5 (seed 003): cooperative training with latent-space masking raises Dice under corruptions.

Published (Chen et al., MICCAI 2021, "Cooperative Training and Latent Space Data Augmentation
for Robust Medical Image Segmentation"): the FTN + STN trained on hard examples decoded from
masked latent codes segments the corrupted ACDC-C test set better than the same networks
trained without them, by about 15% Dice on average over its corruptions.

Ours: per training seed, the ``cooperative`` model (FTN + STN) trained with the ``cooperative``
recipe with masking on (``masking="all"``) and off (``masking="none"``, the seed's standard
training), same loop, epochs and seed, on the demo set (8 epochs: the budget). Both are
evaluated through the grid on the ACDC-C corruptions (motion, spike, ghosting, bias field) at
severity 5, which reaches at least the preset's mean strength (the published protocol), and
under PGD-10 at L-inf 4/255 beside the worst corruption of each case (the strongest protocol).
The effect is, per case and seed, masking-on's mean Dice over the corruptions minus
masking-off's; margin 0.02 Dice. The published +15% is relative: ours is reported relative too.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from medrobust.reproduce.claims import CLAIMS, ClaimContext, ClaimResult
from medrobust.reproduce.page import effect_figure
from medrobust.reproduce.verdict import bootstrap_effect, verdict

CORRUPTIONS = ["motion", "spike", "ghosting", "bias_field"]  # the ACDC-C preset's four
SEVERITY = 5
PGD_EPS = 4.0
MARGIN = 0.02
MASKINGS = {"on": "all", "off": "none"}  # label -> the recipe's masking
EPOCHS = 8  # at demo scale (1 when quick): masking on costs ~3 passes a batch, so 3 seeds fit the budget
QUICK_NETWORK = {"channels": [4, 8]}  # smoke runs; otherwise the model's default widths (16, 32)


def corruption_dice(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, case): the mean and the minimum Dice over the corruption rows.

    Args:
        df: the grid's rows.

    Returns:
        Columns model, case_id, mean, worst.

    Example:
        >>> rows = [{"model": "m", "kind": "corruption", "case_id": "a", "adv_score": s} for s in (0.6, 0.2, 0.4)]
        >>> corruption_dice(pd.DataFrame(rows)).round(3).values.tolist()
        [['m', 'a', 0.4, 0.2]]
    """
    rows = df[df["kind"] == "corruption"]
    return rows.groupby(["model", "case_id"], as_index=False).agg(mean=("adv_score", "mean"),
                                                                  worst=("adv_score", "min"))


def relative_gain(on: float, off: float) -> float:
    """How much higher ``on`` is than ``off``, as a fraction of ``off`` (the published +15% is such a gain).

    Args:
        on: masking-on's mean Dice.
        off: masking-off's mean Dice.

    Returns:
        ``(on - off) / off``; NaN when ``off`` is 0.

    Example:
        >>> round(relative_gain(0.69, 0.6), 3)
        0.15
    """
    return (on - off) / off if off else float("nan")


@CLAIMS.register("cooperative-corruptions", order=5)
def run(ctx: ClaimContext) -> ClaimResult:
    """Train, corrupt, attack and judge claim 5 (see the module docstring).

    Args:
        ctx: the claim's context.

    Returns:
        Its :class:`ClaimResult`.
    """
    data = ctx.segmentation_data()
    _, _, train = ctx.segmenter()
    kwargs: dict[str, Any] = dict(QUICK_NETWORK) if ctx.quick else {}
    steps = 2 if ctx.quick else 10
    perturbations: list[dict[str, Any]] = [
        *({"corruption": c, "severities": [SEVERITY]} for c in CORRUPTIONS),
        {"attack": "pgd", "eps": [PGD_EPS], "eps_unit": "1/255", "norm": "linf",
         "options": {"steps": steps, "loss": "dice_ce"}},
    ]
    frames = []
    for seed in range(ctx.seeds):
        config = train.model_copy(update={"seed": seed, "epochs": ctx.epochs(EPOCHS)})
        models = {f"masking-{label}-s{seed}": ctx.train(data, "cooperative", recipe="cooperative", model_kwargs=kwargs,
                                                          recipe_params={"masking": masking}, config=config)
                  for label, masking in MASKINGS.items()}
        df = ctx.evaluate(f"grid-seed{seed}", models, perturbations, data, max_cases=1 if ctx.quick else None)
        pgd = df[df["perturbation"] == "pgd"][["model", "case_id", "clean_score", "adv_score"]]
        frames.append(corruption_dice(df).merge(pgd.rename(columns={"adv_score": "pgd"}), on=["model", "case_id"])
                      .assign(seed=seed))
    table = pd.concat(frames, ignore_index=True)
    table["masking"] = table["model"].str.split("-").str[1]
    wide = table.pivot_table(index=["seed", "case_id"], columns="masking", values="mean").reset_index()
    effect = bootstrap_effect((wide["on"] - wide["off"]).to_numpy(), margin=MARGIN, unit="Dice",
                              seeds=wide["seed"].to_numpy())
    means = table.groupby("masking")[["clean_score", "mean", "worst", "pgd"]].mean().to_dict("index")
    labels = list(MASKINGS)

    def line(column: str) -> str:
        return "; ".join(f"masking {m} {means[m][column]:.3f}" for m in labels)

    gain = relative_gain(float(means["on"]["mean"]), float(means["off"]["mean"]))
    figure = effect_figure(effect, [f"{m} {c}" for m in labels for c in ("clean", "corrupted", "worst", "PGD")],
                           [float(means[m][c]) for m in labels for c in ("clean_score", "mean", "worst", "pgd")],
                           f"mean Dice: clean, corruptions at severity {SEVERITY}, PGD")
    names = ", ".join(c.replace("_", " ") for c in CORRUPTIONS)
    return ClaimResult(
        claim="cooperative-corruptions", title="Latent masking helps under corruptions",
        source="seed 003 (cooperative training, Chen et al. 2021)",
        statement="Cooperative training with latent-space masking raises Dice on corrupted images (ACDC-C) over "
                  "the same networks trained without masking.",
        published="about +15% Dice on average over ACDC-C (relative to standard training)",
        ours_published=f"mean Dice over the corruptions: {line('mean')} ({gain:+.1%} relative); clean: "
                       f"{line('clean_score')}",
        published_protocol=f"{names} at severity {SEVERITY} (at least ACDC-C's mean strength), one draw per case, "
                           "mean over the corruptions",
        ours_strongest=f"worst corruption per case: {line('worst')}; PGD-{steps} {PGD_EPS:g}/255: {line('pgd')}",
        strongest_protocol=f"per case the worst of the four corruptions, and PGD-{steps} (Dice + CE) at L-inf "
                           f"{PGD_EPS:g}/255",
        effect=effect, effect_meaning="per case and seed: masking-on's mean Dice over the corruptions minus "
                                      "masking-off's",
        verdict=verdict(effect, smoke=ctx.quick), figure=figure, results=list(ctx.results),
        notes=[f"{ctx.seeds} training seed(s); {len(wide) // max(ctx.seeds, 1)} test cases per model",
               f"scaled down to fit the demo's budget: both trained from scratch for {ctx.epochs(EPOCHS)} epoch(s) "
               f"(the demo UNet: {train.epochs}) with the demo's loop (batch {train.batch_size}, lr {train.lr:g}, "
               "cosine); the FTN has no skip connections (its codes at 1/4 of the input), so its clean Dice stays "
               "well below the demo UNet's",
               "the graded corruptions at severity 5 stand in for ACDC-C's drawn strengths; the demo's 3D MNI152 "
               "brain-tissue set, not 2D cardiac MRI: compare the direction and the relative gain, not the numbers"])
