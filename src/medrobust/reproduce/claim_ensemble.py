"""Claim 7 (seed 002, Lerman & Bar-Tov): ensemble voting raises robust accuracy — unless attacked jointly.

Published (Alzheimer MRI, DINOv2, ResNet34 and EfficientNet-B0 fine-tuned, then adversarially
trained with PGD and combined by a majority vote; no numbers, the results section is empty):
adversarial training and the voting ensemble make the classifier resilient to FGSM and PGD.
The adversarial images are made on the single models, so against the vote they are transfer
attacks from one member, which the other members' votes can "correct". Expected here: that gain
shrinks or vanishes when the ensemble is attacked as a whole (through the mean of its
members) and each attack keeps the iterate that fools the model.

Ours: as ``examples/ensemble_demo.py``, on the 2D lesion-classification demo set (8-bit PNG
read with ``minmax:0,255``), per training seed: three narrowed classifiers (resnet18,
densenet121, resnet34) with the same loop, joined by ``medrobust ensemble``, evaluated by the
grid's ensemble rows (``ensemble_runs``) with FGSM and PGD at L-inf 2, 4, 8/255. Published
protocol: the images attacked on one member (transfer), scored by the hard vote, averaged
over the source members. Strongest protocol: the joint attack through the ensemble's mean
logits and mean probabilities, the worst of both modes and both attacks per case and eps,
scored by the hard vote. The effect is, per case and seed, the hard vote's accuracy under the
published protocol minus under the joint attack, each averaged over eps (positive: the
published protocol overstates the ensemble, as the claim's caveat predicts); margin 0.02.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.evaluation.ensembles import load_ensemble_runs
from medrobust.models.ensemble import build_ensemble
from medrobust.reproduce.claims import CLAIMS, ClaimContext, ClaimResult
from medrobust.reproduce.page import effect_figure
from medrobust.reproduce.verdict import bootstrap_effect, verdict
from medrobust.training import TrainConfig

EPS = [2.0, 4.0, 8.0]
NORMALIZATION = "minmax:0,255"
MARGIN = 0.02
EPOCHS = 4
CASES = 12  # of the 50 test cases, classes alternating
TRANSFER = "transfer from "
# the members of examples/ensemble_demo.py narrowed further (quarter-width resnets, a short narrow densenet121)
# so three seeds of three members train and are attacked in minutes on two CPU cores
MEMBERS: dict[str, dict[str, Any]] = {"resnet18": {"widen_factor": 0.25},
           "densenet121": {"init_features": 16, "growth_rate": 8, "block_config": [2, 4, 6, 4]},
           "resnet34": {"widen_factor": 0.25}}
QUICK_MEMBERS: dict[str, dict[str, Any]] = {"resnet18": {"widen_factor": 0.125},
                 "densenet121": {"init_features": 4, "growth_rate": 4, "block_config": [1, 1, 1, 1]},
                 "resnet34": {"widen_factor": 0.125}}
COLUMNS = ["model", "case_id", "clean", "member", "published", "joint"]


def case_protocols(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (ensemble, case): correctness clean, of a member alone, and of the hard vote under each protocol.

    ``member``: each member on the images attacked on itself (white-box on one model), over
    members, attacks and eps; ``published``: the hard vote on images attacked on one member,
    over source members, attacks and eps; ``joint``: the hard vote under the joint attacks,
    the worst of the attacks and joint modes at each eps, then over eps; ``clean``: the hard
    vote on the clean image.

    Args:
        runs: rows of ``ensemble_runs`` (:func:`~medrobust.evaluation.store.load_ensemble_runs`).

    Returns:
        Columns model, case_id, clean, member, published, joint (each in [0, 1]).

    Example:
        >>> def row(setting, eps, vote, own):
        ...     return {"model": "ens", "perturbation": "pgd", "eps_stated": eps, "setting": setting,
        ...             "case_id": "c", "label": 1, "hard_vote": vote, "members_json": json.dumps({"a": own})}
        >>> runs = pd.DataFrame([row("clean", 0.0, 1, 1), row("transfer from a", 4.0, 1, 0),
        ...                      row("transfer from a", 8.0, 1, 1), row("joint (mean logits)", 4.0, 1, 0),
        ...                      row("joint (mean probs)", 4.0, 0, 0), row("joint (mean logits)", 8.0, 1, 0)])
        >>> case_protocols(runs)[["clean", "member", "published", "joint"]].to_dict("records")
        [{'clean': 1.0, 'member': 0.5, 'published': 1.0, 'joint': 0.5}]
    """
    d = runs.assign(vote=(runs["hard_vote"] == runs["label"]).astype(float))
    keys = ["model", "case_id"]
    transfer = d[d["setting"].str.startswith(TRANSFER)]
    own = [float(json.loads(m)[s.removeprefix(TRANSFER)] == label)
           for m, s, label in zip(transfer["members_json"], transfer["setting"], transfer["label"])]
    joint = d[d["setting"].str.startswith("joint")].groupby([*keys, "eps_stated"])["vote"].min()
    parts = [d[d["setting"] == "clean"].groupby(keys)["vote"].mean().rename("clean"),
             transfer.assign(own=own).groupby(keys)["own"].mean().rename("member"),
             transfer.groupby(keys)["vote"].mean().rename("published"),
             joint.groupby(keys).mean().rename("joint")]
    return pd.concat(parts, axis=1, join="inner").reset_index()[COLUMNS]


def train_ensemble(ctx: ClaimContext, data: Path, seed: int) -> Path:
    """The three members of one seed, trained (or reused) and joined by ``medrobust ensemble``.

    Args:
        ctx: the claim's context (tiny members, 1 epoch when quick).
        data: the classification set.
        seed: the training seed of every member.

    Returns:
        The ensemble's ``model.json`` in the shared models folder (rebuilt only when missing).
    """
    config = TrainConfig(epochs=ctx.epochs(EPOCHS), batch_size=16, lr=3e-3, seed=seed)
    members = [ctx.train(data, name, model_kwargs=kwargs, config=config, normalization=NORMALIZATION)
               for name, kwargs in (QUICK_MEMBERS if ctx.quick else MEMBERS).items()]
    out = ctx.models / ("ensemble-" + "-".join(p.parent.name.rsplit("-", 1)[-1][:6] for p in members))
    return out / "model.json" if (out / "model.json").exists() else build_ensemble(members, out)


@CLAIMS.register("ensemble-voting", order=7)
def run(ctx: ClaimContext) -> ClaimResult:
    """Train, attack and judge claim 7 (see the module docstring).

    Args:
        ctx: the claim's context.

    Returns:
        Its :class:`ClaimResult`.
    """
    data = ctx.classification_data()
    steps, eps = (1, EPS[-1:]) if ctx.quick else (3, EPS)
    linf = {"eps": eps, "eps_unit": "1/255", "norm": "linf"}
    perturbations: list[dict[str, Any]] = [{"attack": "fgsm", **linf}, {"attack": "pgd", **linf, "options": {"steps": steps}}]
    test = ctx.balanced_test(data, 4 if ctx.quick else CASES)
    frames = []
    for seed in range(ctx.seeds):
        models = {f"ensemble-s{seed}": train_ensemble(ctx, data, seed)}
        ctx.evaluate(f"grid-seed{seed}", models, perturbations, test)
        frames.append(case_protocols(load_ensemble_runs(ctx.results[-1])).assign(seed=seed))
    table = pd.concat(frames, ignore_index=True)
    effect = bootstrap_effect((table["published"] - table["joint"]).to_numpy(), margin=MARGIN,
                              unit="hard-vote accuracy", seeds=table["seed"].to_numpy())
    means = table[["clean", "member", "published", "joint"]].mean()
    labels = {"clean": "clean vote", "member": "member alone", "published": "vote, transfer", "joint": "vote, joint"}
    figure = effect_figure(effect, list(labels.values()), [float(means[c]) for c in labels],
                           f"accuracy, mean over eps {', '.join(f'{e:g}' for e in eps)}/255")
    eps_text = f"L-inf {', '.join(f'{e:g}' for e in eps)}/255"
    return ClaimResult(
        claim="ensemble-voting", title="Ensemble voting under a joint attack",
        source="seed 002 (Lerman & Bar-Tov, MRI Alzheimer classification under attack)",
        statement="Adversarial training and a majority vote of three fine-tuned classifiers raise accuracy under "
                  "FGSM and PGD; the gain is expected to shrink or vanish when the ensemble is attacked jointly. "
                  "Here 'holds' means it does shrink: the hard vote is more accurate under transfer attacks from a "
                  "member than under the joint attack.",
        published="no numbers (the project's results section is empty): FGSM and PGD on the single models, then "
                  "the majority vote of DINOv2, ResNet34 and EfficientNet-B0 (adversarially trained) as the defence; "
                  "nothing under a joint attack",
        ours_published=f"hard vote {means['published']:.2f} on images attacked on one member (each member alone on "
                       f"its own attacked images {means['member']:.2f}; clean vote {means['clean']:.2f}), accuracy "
                       "mean over FGSM, PGD and eps",
        published_protocol=f"FGSM and PGD-{steps} made on one member (transfer), {eps_text}, scored by the hard "
                           "vote of the three; averaged over the source member",
        ours_strongest=f"hard vote {means['joint']:.2f} under the joint attack (worst case, mean over eps)",
        strongest_protocol=f"FGSM and PGD-{steps} through the ensemble's mean logits and mean probabilities, "
                           f"{eps_text}, iterates kept by correctness; per case and eps the worst of both attacks "
                           "and both means, scored by the hard vote",
        effect=effect, effect_meaning="per case and seed: the hard vote's accuracy under transfer attacks from a "
                                      "member minus under the joint attack (positive: the published protocol "
                                      "overstates the ensemble, i.e. the claimed gain shrinks, so 'holds')",
        verdict=verdict(effect, smoke=ctx.quick), figure=figure, results=list(ctx.results),
        notes=[f"{ctx.seeds} training seed(s); {len(table) // max(ctx.seeds, 1)} test cases per seed; "
               f"{ctx.epochs(EPOCHS)} epochs per member",
               "'holds' is the caveat of the claim holding: the ensemble's robustness measured with transfer "
               "attacks does not survive a joint attack; 'does not hold' would mean the vote keeps its accuracy "
               "when attacked jointly",
               "scaled down for a CPU run: the demo's 64x64 MNI152 lesion slices instead of Alzheimer MRI; "
               "quarter-width resnet18/resnet34 and a short narrow densenet121 (blocks 2, 4, 6, 4; growth 8) "
               f"instead of DINOv2, ResNet34 and EfficientNet-B0; {ctx.epochs(EPOCHS)} epochs; PGD with {steps} steps; "
               f"{CASES} of the 50 test cases (classes alternating)",
               "members trained with the standard recipe: the claim's adversarial training of the members is left "
               "out to fit the time budget, so this claim judges the vote alone"])
