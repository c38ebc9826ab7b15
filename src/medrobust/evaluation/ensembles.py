"""Ensembles under attack (seed 002): clean, transfer from each member, joint attack.

Settings, each scored three ways:

- ``clean``: the test images.
- ``transfer from <member>``: adversarial images made on one member alone (white-box on
  it), scored on the whole ensemble.
- ``joint (mean logits)`` / ``joint (mean probs)``: adversarial images made through the
  ensemble's differentiable mean (``Ensemble`` in that mode), so the attack sees every member.

Scorings: **hard vote** (majority of the members' labels, ties to the higher mean
probability: ``Ensemble.vote``), **soft vote** (argmax of the mean softmax) and **mean
logits** (argmax of the mean logits). The hard vote has no gradient; it is only ever
attacked through one of the means.

Per-case rows (one per setting) go to the table ``ensemble_runs`` of ``results.sqlite``
(through :class:`~medrobust.evaluation.store.ResultStore`) when the grid holds an ensemble
checkpoint (:func:`run_ensemble_case`, called by the grid for each case); the report reads
them back with :func:`load_ensemble_runs` and aggregates with :func:`ensemble_table`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import pandas as pd
import torch
from torch import nn

from medrobust.attacks import Attack
from medrobust.evaluation.core import attack_for, run_seed
from medrobust.evaluation.specs import AttackSpec
from medrobust.evaluation.store import ENSEMBLE_COLUMNS, ENSEMBLE_SCORINGS, ResultStore, load_ensemble_runs
from medrobust.evaluation.types import Case, LoadedModel, RunSettings
from medrobust.models.ensemble import Ensemble
from medrobust.models.inference import infer

__all__ = ["SCORINGS", "JOINT_MODES", "COLUMNS", "member_names", "predictions", "attack_settings",
           "evaluate_ensemble", "ensemble_table", "load_ensemble_runs", "is_ensemble_classifier", "run_ensemble_case"]

SCORINGS = ENSEMBLE_SCORINGS
JOINT_MODES = ("mean_logits", "mean_probs")
COLUMNS = ENSEMBLE_COLUMNS


def member_names(ensemble: Ensemble, extra: dict[str, Any] | None = None) -> list[str]:
    """Display names of the members.

    The checkpoint's ``extra["members"][i]["name"]``, else ``<architecture>#i``.

    Args:
        ensemble: the ensemble.
        extra: its checkpoint's ``extra`` (``model.json``), if any.

    Returns:
        One name per member.

    Example:
        >>> import torch
        >>> ens = Ensemble([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)])
        >>> member_names(ens), member_names(ens, {"members": [{"name": "a"}, {"name": "b"}]})
        (['Linear#0', 'Linear#1'], ['a', 'b'])
    """
    saved = [m.get("name") for m in (extra or {}).get("members", []) if isinstance(m, dict)]
    if len(saved) == len(ensemble.members) and all(saved):
        return [str(n) for n in saved]
    specs = [getattr(m, "medrobust_spec", {}).get("architecture", type(m).__name__) for m in ensemble.members]
    return [f"{s}#{i}" for i, s in enumerate(specs)]


def predictions(ensemble: Ensemble, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ensemble's labels under each scoring, and each member's own label.

    Args:
        ensemble: an ensemble of classifiers.
        x: images (B, C, *spatial), model units.

    Returns:
        ``hard_vote``, ``soft_vote``, ``mean_logits``: labels (B,); ``members``: (M, B); on the CPU.

    Example:
        >>> import torch
        >>> ens = Ensemble([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)]).eval()
        >>> out = predictions(ens, torch.rand(5, 4))
        >>> tuple(out["members"].shape), tuple(out["hard_vote"].shape)
        ((3, 5), (5,))
    """
    z = torch.stack([infer(m, x) for m in ensemble.members]).float()  # (M, B, K)
    return {"hard_vote": ensemble.vote(x).cpu(), "soft_vote": torch.softmax(z, dim=2).mean(0).argmax(1).cpu(),
            "mean_logits": z.mean(0).argmax(1).cpu(), "members": z.argmax(2).cpu()}


def attack_settings(ensemble: Ensemble, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The models an attack is made on: each member (transfer), then the ensemble in each joint mode.

    Args:
        ensemble: the ensemble.
        names: its members' names.

    Returns:
        ``(setting, model to attack)`` pairs.

    Example:
        >>> import torch
        >>> ens = Ensemble([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)])
        >>> [s for s, _ in attack_settings(ens, ["a", "b"])]
        ['transfer from a', 'transfer from b', 'joint (mean logits)', 'joint (mean probs)']
    """
    members = list(ensemble.members)
    return ([(f"transfer from {n}", m) for n, m in zip(names, members)] +
            [(f"joint ({mode.replace('_', ' ')})", Ensemble(members, mode=mode).eval()) for mode in JOINT_MODES])


def evaluate_ensemble(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, attack: Attack | None, *, names: Sequence[str] | None = None,
                      case_ids: Sequence[str] | None = None, seed: int | None = None) -> pd.DataFrame:
    """Per-case predictions of ``ensemble`` clean (``attack=None``) or under every attack setting.

    Args:
        ensemble: an :class:`~medrobust.models.ensemble.Ensemble` of classifiers (eval mode).
        x: images ``(B, C, *spatial)`` in model units.
        y: labels ``(B,)``.
        attack: a configured attack (``get_attack(name, budget, **options)``; the budget fits
            ``x``), run once per setting; None scores the clean images only.
        names: member names (default :func:`member_names`).
        case_ids: the cases' ids (default "0".."B-1").
        seed: seeds each setting's random start (``seed + setting index``).

    Returns:
        Rows setting, case_id, label, hard_vote, soft_vote, mean_logits (predicted labels) and
        members_json ({member name: label}).
    """
    names = list(names) if names is not None else member_names(ensemble)
    case_ids = list(case_ids) if case_ids is not None else [str(i) for i in range(x.shape[0])]
    runs = [("clean", x)]
    if attack is not None:
        runs = []
        for i, (setting, model) in enumerate(attack_settings(ensemble, names)):
            if seed is not None:
                torch.manual_seed(seed + i)
            runs.append((setting, attack(model, x, y).detach()))
    rows = []
    for setting, images in runs:
        p = predictions(ensemble, images)
        for b, case in enumerate(case_ids):
            rows.append({"setting": setting, "case_id": case, "label": int(y[b]),
                         **{s: int(p[s][b]) for s in SCORINGS},
                         "members_json": json.dumps({n: int(p["members"][m, b]) for m, n in enumerate(names)})})
    return pd.DataFrame(rows)


def ensemble_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracies per (model, perturbation, eps, setting) from per-case rows.

    Args:
        runs: rows of ``ensemble_runs`` (:func:`load_ensemble_runs`).

    Returns:
        Columns model, perturbation, norm, eps_unit, eps_stated, setting, n_cases,
        hard_vote, soft_vote, mean_logits (accuracies in [0, 1]) and ``members`` ({name:
        accuracy}, each member alone on the same images). Settings keep the order clean,
        transfer, joint.

    Example:
        >>> runs = pd.DataFrame([{"model": "ens", "perturbation": "clean", "eps_stated": 0.0, "setting": "clean",
        ...                       "case_id": c, "label": 1, "hard_vote": v, "soft_vote": 1, "mean_logits": 1,
        ...                       "members_json": '{"a": 1}'} for c, v in (("c0", 1), ("c1", 0))])
        >>> ensemble_table(runs)[["setting", "n_cases", "hard_vote", "soft_vote"]].to_dict("records")
        [{'setting': 'clean', 'n_cases': 2, 'hard_vote': 0.5, 'soft_vote': 1.0}]
    """
    cols = ["model", "perturbation", "norm", "eps_unit", "eps_stated", "setting", "n_cases", *SCORINGS, "members"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = runs.copy()
    for c in ("model", "perturbation", "norm", "eps_unit"):
        d[c] = d[c].fillna("-") if c in d else "-"
    if "eps_stated" not in d:
        d["eps_stated"] = 0.0
    for s in SCORINGS:
        d[s] = (d[s] == d["label"]).astype(float)
    member = d["members_json"].map(json.loads)
    d["_order"] = d["setting"].map(lambda s: 0 if s == "clean" else 1 if s.startswith("transfer") else 2)
    rows = []
    keys = ["model", "perturbation", "norm", "eps_unit", "eps_stated", "_order", "setting"]
    for key, g in d.groupby(keys, sort=True):
        preds = member[g.index]
        accs = {n: float(sum(p[n] == lab for p, lab in zip(preds, g["label"])) / len(g)) for n in preds.iloc[0]}
        base = dict(zip(keys, cast(tuple[Any, ...], key)))
        scores = {s: float(g[s].mean()) for s in SCORINGS}
        rows.append({**base, "n_cases": g["case_id"].nunique(), **scores, "members": accs})
    return pd.DataFrame(rows)[cols]


def is_ensemble_classifier(lm: LoadedModel) -> bool:
    """True when ``lm`` is an :class:`Ensemble` of classifiers (it gets ensemble rows too).

    Args:
        lm: a loaded model.

    Returns:
        Whether the grid also writes its ensemble settings.
    """
    return isinstance(lm.model, Ensemble) and lm.task == "classification"


def run_ensemble_case(lm: LoadedModel, case: Case, specs: Sequence[AttackSpec], settings: RunSettings,
                      store: ResultStore) -> int:
    """The unfinished clean, transfer and joint rows of one ensemble case, written to ``store``.

    Every attack entry (not noise) runs at each of its eps with the case's budget; a
    finished (perturbation, eps, case) is skipped, so a rerun resumes.

    Args:
        lm: an ensemble classifier (:func:`is_ensemble_classifier`).
        case: the prepared case (B = 1).
        specs: the grid's attack entries.
        settings: seed (each setting seeded from the run's seed) and metrics.
        store: where the rows go (one transaction per (perturbation, eps, case)).

    Returns:
        The number of rows added.
    """
    assert isinstance(lm.model, Ensemble)
    done = store.ensemble_done_keys(lm.name)
    jobs: list[tuple[AttackSpec | None, float]] = [(None, 0.0)] if ("clean", 0.0, case.id) not in done else []
    jobs += [(p, float(e)) for p in specs if p.attack != "gaussian" for e in p.eps
             if (p.label, float(e), case.id) not in done]
    names = member_names(lm.model, lm.info.extra)
    added = 0
    for spec, eps in jobs:
        label = spec.label if spec is not None else "clean"
        attack = attack_for(spec, eps, case.x, case.imap)[1] if spec is not None else None
        seed = run_seed(settings.seed, lm.name, f"ensemble:{label}", eps, case.id)
        rows = evaluate_ensemble(lm.model, case.x, case.y, attack, names=names, case_ids=[case.id], seed=seed)
        store.add_ensemble_rows(rows, {"model": lm.name, "perturbation": label, "attack": spec.attack if spec else None,
                                       "norm": spec.norm if spec else None, "eps_stated": eps,
                                       "eps_unit": spec.eps_unit if spec else None})
        added += len(rows)
    return added
