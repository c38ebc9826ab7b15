"""Which runs keep an example file: per model, the ``k`` cases whose worst run lowered the score the most.

``drop = clean_score - adv_score``; for classifiers plus a small term for the fall of the
true-class probability so ties break by confidence. The grid decides run by run
(:class:`ExampleKeeper`); the report picks the same runs from the store
(:func:`select_examples`); both name the file with :func:`example_name`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

EXAMPLES_DIR = "examples"


def example_name(model: str, perturbation: str, eps: float, case_id: str) -> str:
    """File name of a run's example: readable slug + short hash of the exact key.

    The slug (at most 80 characters of letters, digits, dots and dashes) keeps the name
    readable; the hash keeps two keys apart that slug the same way.

    Args:
        model: the model name.
        perturbation: the perturbation label.
        eps: the stated eps (or severity).
        case_id: the case id.

    Returns:
        ``<slug>-<8 hex>.npz``.

    Example:
        >>> from medrobust.evaluation.examples import example_name
        >>> example_name("unet", "pgd", 4.0, "case 01")
        'unet-pgd-4-case-01-96346332.npz'
    """
    key = f"{model}\x1f{perturbation}\x1f{eps!r}\x1f{case_id}"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{model}_{perturbation}_{eps:g}_{case_id}").strip("-")[:80]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.npz"


def drop_of(row: dict[str, Any] | pd.Series) -> float:
    """How much a run hurt: clean minus adversarial score (+ 1e-3 x probability drop).

    Args:
        row: a store row (dict or Series) with ``clean_score`` and ``adv_score``; for a
            classifier also ``clean_prob`` / ``adv_prob`` (true-class probabilities), whose
            fall breaks ties between runs of equal score.

    Returns:
        ``clean_score - adv_score + 1e-3 * (clean_prob - adv_prob)`` (the last term only
        when both probabilities are known).

    Example:
        >>> from medrobust.evaluation.examples import drop_of
        >>> drop_of({"clean_score": 0.9, "adv_score": 0.4})
        0.5
        >>> round(drop_of({"clean_score": 1.0, "adv_score": 0.0, "clean_prob": 0.9, "adv_prob": 0.1}), 4)
        1.0008
    """
    drop = float(row["clean_score"]) - float(row["adv_score"])
    cp, ap = row.get("clean_prob"), row.get("adv_prob")
    if cp is not None and ap is not None and not (pd.isna(cp) or pd.isna(ap)):
        drop += 1e-3 * (float(cp) - float(ap))
    return drop


def _top(cases: dict[str, tuple[float, str]], k: int) -> set[str]:
    ranked = sorted(cases.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return {case for case, _ in ranked[:k]}


def select_examples(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per model the ``k`` cases with the largest drop, each with its worst run (store order).

    Args:
        df: store rows (:meth:`~medrobust.evaluation.store.ResultStore.to_dataframe`); uses
            model, perturbation, eps_stated, case_id and the columns of :func:`drop_of`.
        k: cases per model; 0 or less selects nothing.

    Returns:
        The selected rows with columns ``drop`` and ``example`` (file name, see
        :func:`example_name`) added; sorted by model, then drop (largest first).

    Example:
        >>> import pandas as pd
        >>> from medrobust.evaluation.examples import select_examples
        >>> df = pd.DataFrame({"model": "m", "perturbation": ["pgd", "pgd", "square"], "eps_stated": 4.0,
        ...                    "case_id": ["a", "b", "a"], "clean_score": 0.9, "adv_score": [0.5, 0.7, 0.2]})
        >>> select_examples(df, k=1)[["case_id", "perturbation", "drop"]].round(3).values.tolist()
        [['a', 'square', 0.7]]
    """
    if df.empty or k <= 0:
        return df.iloc[0:0].assign(drop=[], example=[])
    d = df.assign(drop=[drop_of(r) for _, r in df.iterrows()])
    worst = d.loc[d.groupby(["model", "case_id"], sort=False)["drop"].idxmax()]
    worst = worst.sort_values(["model", "drop", "case_id"], ascending=[True, False, True])
    worst = worst.groupby("model", sort=True).head(k)
    names = [example_name(r["model"], r["perturbation"], float(r["eps_stated"]), r["case_id"]) for _, r in worst.iterrows()]
    return worst.assign(example=names)


class ExampleKeeper:
    """Decides, run by run, which example files to keep so each model has its ``k`` worst.

    ``wants`` before saving, ``accept`` after the row is in the store (it deletes files
    that fell out). Initialised from the rows already stored, so a resumed grid agrees with
    :func:`select_examples`.

    Args:
        folder: where the example files are (files that fall out are deleted there).
        k: examples kept per model; 0 keeps none.
        stored: store rows already written (a resumed grid), or None.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import ExampleKeeper
        >>> folder = Path(tempfile.mkdtemp())
        >>> keeper = ExampleKeeper(folder, k=1)
        >>> keeper.wants("m", "a", drop=0.5)
        True
        >>> (folder / "a.npz").touch()
        >>> keeper.accept("m", "a", 0.5, "a.npz")
        >>> keeper.wants("m", "b", drop=0.2), keeper.wants("m", "b", drop=0.7)
        (False, True)
        >>> (folder / "b.npz").touch()
        >>> keeper.accept("m", "b", 0.7, "b.npz")  # a fell out of the k = 1 worst: its file goes
        >>> sorted(p.name for p in folder.iterdir())
        ['b.npz']
    """

    def __init__(self, folder: Path, k: int, stored: pd.DataFrame | None = None) -> None:
        self.folder, self.k = Path(folder), k
        self.worst: dict[str, dict[str, tuple[float, str]]] = {}
        for _, r in (stored if stored is not None else pd.DataFrame()).iterrows():
            self._record(r["model"], r["case_id"], drop_of(r),
                         example_name(r["model"], r["perturbation"], float(r["eps_stated"]), r["case_id"]))

    def _record(self, model: str, case: str, drop: float, name: str) -> tuple[float, str] | None:
        cases = self.worst.setdefault(model, {})
        old = cases.get(case)
        if old is None or drop > old[0]:
            cases[case] = (drop, name)
        return old

    def wants(self, model: str, case: str, drop: float) -> bool:
        """True when a run with this drop becomes one of the model's ``k`` worst cases.

        Args:
            model: the model name.
            case: the case id.
            drop: the run's :func:`drop_of`.

        Returns:
            False when ``k`` is 0, when the case already has a run with at least this drop,
            or when the case would not rank among the ``k`` largest drops.
        """
        cases = dict(self.worst.get(model, {}))
        if self.k <= 0 or (case in cases and drop <= cases[case][0]):
            return False
        cases[case] = (drop, "")
        return case in _top(cases, self.k)

    def accept(self, model: str, case: str, drop: float, name: str) -> None:
        """Record a stored run; delete example files no longer among the ``k`` worst.

        Args:
            model: the model name.
            case: the case id.
            drop: the run's :func:`drop_of`.
            name: the run's example file name in ``folder`` (:func:`example_name`).
        """
        old = self._record(model, case, drop, name)
        if old is not None and self.worst[model][case][1] != old[1]:
            (self.folder / old[1]).unlink(missing_ok=True)
        keep = _top(self.worst[model], self.k)
        for c, (_, n) in self.worst[model].items():
            if c not in keep:
                (self.folder / n).unlink(missing_ok=True)
