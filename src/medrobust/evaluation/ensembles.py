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
when the grid holds an ensemble checkpoint (:func:`run_grid_ensembles`); the report reads
them back with :func:`load_ensemble_runs` and aggregates with :func:`ensemble_table`.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

SCORINGS = ("hard_vote", "soft_vote", "mean_logits")
JOINT_MODES = ("mean_logits", "mean_probs")
TABLE = "ensemble_runs"
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (model TEXT NOT NULL, perturbation TEXT NOT NULL, attack TEXT,
  norm TEXT, eps_stated REAL NOT NULL, eps_unit TEXT, setting TEXT NOT NULL, case_id TEXT NOT NULL, label INTEGER,
  hard_vote INTEGER, soft_vote INTEGER, mean_logits INTEGER, members_json TEXT,
  PRIMARY KEY (model, perturbation, eps_stated, setting, case_id))"""
COLUMNS = ("model", "perturbation", "attack", "norm", "eps_stated", "eps_unit", "setting", "case_id", "label",
           *SCORINGS, "members_json")


def member_names(ensemble: Any, extra: dict[str, Any] | None = None) -> list[str]:
    """Display names of the members: the checkpoint's ``extra["members"][i]["name"]``, else
    ``<architecture>#i``."""
    saved = [m.get("name") for m in (extra or {}).get("members", []) if isinstance(m, dict)]
    if len(saved) == len(ensemble.members) and all(saved):
        return [str(n) for n in saved]
    specs = [getattr(m, "medrobust_spec", {}).get("architecture", type(m).__name__) for m in ensemble.members]
    return [f"{s}#{i}" for i, s in enumerate(specs)]


def predictions(ensemble: Any, x: Any) -> dict[str, Any]:
    """Labels ``(B,)`` under each scoring, plus ``members``: ``(M, B)`` each member's own label."""
    import torch

    from medrobust.models.inference import infer

    z = torch.stack([infer(m, x) for m in ensemble.members]).float()  # (M, B, K)
    return {"hard_vote": ensemble.vote(x).cpu(), "soft_vote": torch.softmax(z, dim=2).mean(0).argmax(1).cpu(),
            "mean_logits": z.mean(0).argmax(1).cpu(), "members": z.argmax(2).cpu()}


def attack_settings(ensemble: Any, names: Sequence[str]) -> list[tuple[str, Any]]:
    """``(setting, model to attack)``: each member (transfer), then the ensemble in each joint mode."""
    from medrobust.models.ensemble import Ensemble

    members = list(ensemble.members)
    return ([(f"transfer from {n}", m) for n, m in zip(names, members)] +
            [(f"joint ({mode.replace('_', ' ')})", Ensemble(members, mode=mode).eval()) for mode in JOINT_MODES])


def evaluate_ensemble(ensemble: Any, x: Any, y: Any, attack: Any | None, *, names: Sequence[str] | None = None,
                      case_ids: Sequence[str] | None = None, seed: int | None = None) -> pd.DataFrame:
    """Per-case predictions of ``ensemble`` clean (``attack=None``) or under every attack setting.

    Args:
        ensemble: an :class:`~medrobust.models.ensemble.Ensemble` of classifiers (eval mode).
        x: images ``(B, C, *spatial)`` in model units; y: labels ``(B,)``.
        attack: a configured attack (``get_attack(name, budget, **options)``; the budget fits
            ``x``), run once per setting; None scores the clean images only.
        names: member names (default :func:`member_names`); case_ids: default "0".."B-1".
        seed: seeds each setting's random start (``seed + setting index``).

    Returns:
        Rows setting, case_id, label, hard_vote, soft_vote, mean_logits (predicted labels) and
        members_json ({member name: label}).
    """
    import torch

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

    Columns: model, perturbation, norm, eps_unit, eps_stated, setting, n_cases, hard_vote,
    soft_vote, mean_logits (accuracies in [0, 1]) and ``members`` ({name: accuracy}, each
    member alone on the same images). Settings keep the order clean, transfer, joint.
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
        rows.append({**dict(zip(keys, key)), "n_cases": g["case_id"].nunique(), **g[list(SCORINGS)].mean().to_dict(),
                     "members": accs})
    return pd.DataFrame(rows)[cols]


def load_ensemble_runs(store_path: str | Path) -> pd.DataFrame:
    """Every row of ``ensemble_runs`` in a results store (empty frame when there is none)."""
    path = Path(store_path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY rowid", con)
    except (sqlite3.OperationalError, pd.errors.DatabaseError):  # no such table: no ensemble in this grid
        return pd.DataFrame(columns=COLUMNS)
    finally:
        con.close()


def write_ensemble_rows(store_path: str | Path, rows: pd.DataFrame, keys: dict[str, Any]) -> None:
    """Add the rows of one (perturbation, eps, case) to ``ensemble_runs`` in one transaction.

    ``rows`` as :func:`evaluate_ensemble` returns them; ``keys`` adds model, perturbation,
    attack, norm, eps_stated and eps_unit. Rows whose key exists are left as they are, and a
    resumed grid never sees half of a case.
    """
    records = [tuple({**keys, **r}.get(c) for c in COLUMNS) for r in rows.to_dict("records")]
    con = sqlite3.connect(store_path, isolation_level=None, timeout=60.0)
    try:
        con.execute(_SCHEMA)
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(f"INSERT OR IGNORE INTO {TABLE} VALUES ({', '.join('?' * len(COLUMNS))})", records)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


def run_grid_ensembles(cfg: Any, loaded: Sequence[Any], store_path: Path) -> int:
    """Clean, transfer and joint rows for every ensemble classifier of a grid; returns rows added.

    ``loaded`` are the grid's ``LoadedModel`` (name, model, info, split). Every attack of the
    grid (not noise) runs at each of its eps, case by case (B = 1, the grid's per-case budget);
    finished (perturbation, eps, case) triples are skipped, so a rerun resumes.
    """
    import torch

    from medrobust.attacks import get_attack
    from medrobust.evaluation.config import AttackSpec
    from medrobust.evaluation.grid import run_seed
    from medrobust.models.ensemble import Ensemble
    from medrobust.units import IntensityMap, budget_for_case

    todo = [lm for lm in loaded if isinstance(lm.model, Ensemble) and lm.split.task == "classification"]
    if not todo:
        return 0
    attacks = [p for p in cfg.perturbations if isinstance(p, AttackSpec) and p.attack != "gaussian"]
    done_rows = load_ensemble_runs(store_path)
    added = 0
    for lm in todo:
        mine = done_rows[done_rows["model"] == lm.name]
        done = set(zip(mine["perturbation"], mine["eps_stated"].astype(float), mine["case_id"]))
        names = member_names(lm.model, lm.info.extra)
        lm.model.to(torch.device(cfg.device)).eval()
        for i in range(len(lm.split.dataset)):
            item = lm.split.dataset[i]
            case = str(item["id"])
            jobs = [(None, 0.0)] * (("clean", 0.0, case) not in done) + [
                (p, float(e)) for p in attacks for e in p.eps if (p.label, float(e), case) not in done]
            if not jobs:
                continue
            x = item["image"].unsqueeze(0).to(cfg.device)
            y = torch.as_tensor(item["label"]).reshape(1).to(cfg.device)
            imap = IntensityMap.from_dict(item["meta"]["intensity"])
            for p, eps in jobs:
                attack = (None if p is None else
                          get_attack(p.attack, budget_for_case(p.norm, eps, p.eps_unit, x, imap), **p.options))
                seed = run_seed(cfg.seed, lm.name, f"ensemble:{p.label if p else 'clean'}", eps, case)
                rows = evaluate_ensemble(lm.model, x, y, attack, names=names, case_ids=[case], seed=seed)
                write_ensemble_rows(store_path, rows, {
                    "model": lm.name, "perturbation": p.label if p else "clean", "attack": p.attack if p else None,
                    "norm": p.norm if p else None, "eps_stated": eps, "eps_unit": p.eps_unit if p else None})
                added += len(rows)
    return added
