"""Signs of gradient masking per (model, attack): flat loss, scores rising with eps, black-box stronger."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medrobust.evaluation.robustness.curves import attack_curves, attacks_only

BLACK_BOX = {"square"}
NOISE = {"gaussian"}
TOLERANCE = 0.02  # score difference (Dice or accuracy) treated as real in masking checks


def masking_checks(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Signs of gradient masking per (model, attack); rows: model, attack, likely_masking, reasons.

    Flags: the attack's best loss never rose above its initial loss; its robust score
    rises with eps by more than ``TOLERANCE``; the black-box Square attack beats a
    gradient attack at the same budget by more than ``TOLERANCE``.

    Args:
        df: the ``runs`` dataframe of :meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`
            (or any frame with its columns);
            uses the columns of :func:`attack_curves` plus ``loss_initial`` and
            ``loss_best`` (NaN where the attack has no loss, e.g. noise).

    Returns:
        One dict per (model, perturbation label): ``model``, ``attack`` (the label),
        ``likely_masking`` (bool) and ``reasons`` ("; "-joined, or "no sign of masking"),
        ready for :meth:`~medrobust.evaluation.store.ResultStore.write_checks`.

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.robustness import masking_checks
        >>> runs = [("pgd", 0.7), ("square", 0.2)]
        >>> df = pd.DataFrame([{"model": "m", "perturbation": p, "attack": p, "kind": "attack", "norm": "linf",
        ...                     "eps_unit": "1/255", "eps_stated": 4.0, "case_id": "a", "clean_score": 0.9,
        ...                     "adv_score": s, "loss_initial": 1.0, "loss_best": 2.0} for p, s in runs])
        >>> for check in masking_checks(df):
        ...     print(check["attack"], check["likely_masking"], "-", check["reasons"])
        pgd True - black-box square is stronger at eps 4
        square False - no sign of masking
    """
    curves = attack_curves(df)
    atk = attacks_only(df)
    out = []
    for (model, pert), g in atk.groupby(["model", "perturbation"], sort=True):
        reasons = []
        name = g["attack"].iloc[0]
        loss = g.dropna(subset=["loss_initial", "loss_best"])
        loss = loss[loss["eps_stated"] > 0]
        if name not in NOISE and len(loss) and (loss["loss_best"] - loss["loss_initial"]).max() <= 1e-7:
            reasons.append("best loss never rose above the initial loss")
        c = curves[(curves["model"] == model) & (curves["perturbation"] == pert)].sort_values("eps_stated")
        rise = c["score"].diff()
        if (rise > TOLERANCE).any():
            e = c["eps_stated"].iloc[int(np.nanargmax(rise.to_numpy()))]
            reasons.append(f"score rises with eps (by {rise.max():.3f} at eps {e:g})")
        if name not in BLACK_BOX | NOISE:
            norm, unit = g["norm"].iloc[0], g["eps_unit"].iloc[0]
            bb = curves[(curves["model"] == model) & (curves["attack"].isin(BLACK_BOX)) &
                        (curves["norm"] == norm) & (curves["eps_unit"] == unit) & (curves["eps_stated"] > 0)]
            both = c.merge(bb, on="eps_stated", suffixes=("", "_bb"))
            worse = both[both["score_bb"] < both["score"] - TOLERANCE]
            if len(worse):
                e = worse["eps_stated"].iloc[0]
                reasons.append(f"black-box {worse['perturbation_bb'].iloc[0]} is stronger at eps {e:g}")
        out.append({"model": model, "attack": pert, "likely_masking": bool(reasons),
                    "reasons": "; ".join(reasons) or "no sign of masking"})
    return out
