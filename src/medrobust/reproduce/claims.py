"""The claims ``medrobust reproduce`` re-measures: what a claim module receives and returns, and their registry.

A claim module registers one function ``run(ctx) -> ClaimResult`` with
``@CLAIMS.register("name", order=N)`` (N places it on the page). It trains what it needs through :meth:`ClaimContext.train` (reused
by config hash across claims and reruns), evaluates through the grid (every number is a
row of a ``results.sqlite`` under its folder), and returns the published number, ours under
the published protocol, ours under the strongest protocol (the worst-case ensembles, the
metric-chosen iterate), the effect with its interval and the verdict
(:mod:`medrobust.reproduce.verdict`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medrobust.data.datalists import load_class_folders
from medrobust.data.demo import build_demo_classification, build_demo_segmentation
from medrobust.data.io import atomic_path
from medrobust.demo import DEMO_MODEL, DEMO_MODEL_KWARGS, DEMO_TRAIN
from medrobust.evaluation.config import parse_config
from medrobust.evaluation.grid import STORE_NAME, run_grid
from medrobust.evaluation.store import ResultStore
from medrobust.registry import Registry
from medrobust.reproduce.verdict import Effect
from medrobust.training import TrainConfig, train_model

SCALES: tuple[str, ...] = ("demo", "full")
QUICK_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}  # smoke runs: seconds per model


@dataclass
class ClaimContext:
    """What a claim module gets.

    Attributes:
        out: the claim's own folder (``OUT/<claim id>``), created.
        models: the folder of trained models shared by every claim (``OUT/models``).
        scale: ``demo`` (the bundled demo sets) or ``full`` (``datalist``).
        quick: a smoke run: tiny data, one epoch, few steps; verdicts say "smoke run".
        seeds: training seeds per trained setting (3 at demo scale, 1 when quick).
        datalist: the user's segmentation datalist at ``full`` scale, else None.
        progress: show progress bars.
        results: the ``results.sqlite`` files of the grids it ran (the page cites them).
    """

    out: Path
    models: Path
    scale: str = "demo"
    quick: bool = False
    seeds: int = 3
    datalist: Path | None = None
    progress: bool = False

    results: list[str] = field(default_factory=list)

    def segmentation_data(self) -> Path:
        """The 3D segmentation datalist: the user's at full scale, else the demo MNI152 set (smaller when quick).

        Returns:
            The ``dataset.json``.
        """
        if self.datalist is not None:
            return self.datalist
        if self.quick:
            return build_demo_segmentation(self.models.parent / "data" / "segmentation-quick", n_train=2, n_val=1,
                                           n_test=2, spacing_mm=7.0)
        return build_demo_segmentation(self.models.parent / "data" / "segmentation")

    def classification_data(self) -> Path:
        """The 2D lesion-classification demo set (fewer, smaller images when quick).

        Returns:
            Its class-folder root.
        """
        folder = self.models.parent / "data"
        if self.quick:
            return build_demo_classification(folder / "classification-quick", n_train=16, n_val=4, n_test=8, size=32)
        return build_demo_classification(folder / "classification")

    def balanced_test(self, data: Path, n: int) -> Path:
        """A CSV datalist of ``n`` test cases of a class-folder set, the classes taken in turn.

        A grid's ``max_cases`` keeps the first cases, which in a class-folder set are all of the
        first class; this list alternates the classes instead.

        Args:
            data: the class-folder root (``test/<class>/*.png``).
            n: the number of cases (all of them when the split has fewer).

        Returns:
            The CSV in the claim's folder (columns image, label, id, split; its test split is the subset).
        """
        items, classes = load_class_folders(data / "test")
        groups = [[it for it in items if it["label"] == k] for k in range(len(classes))]
        picked = [it for row in itertools.zip_longest(*groups) for it in row if it is not None][:n]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(
            [["image", "label", "id", "split"], *([it["image"], classes[it["label"]], it["id"], "test"] for it in picked)])
        path = self.out / f"test-{n}.csv"
        if not path.is_file() or path.read_text(encoding="utf-8") != text.getvalue():  # a rerun resumes its grid
            with atomic_path(path) as tmp:
                tmp.write_text(text.getvalue(), encoding="utf-8")
        return path

    def evaluate(self, name: str, models: dict[str, Path], perturbations: list[dict[str, Any]], data: Path,
                 **keys: Any) -> pd.DataFrame:
        """Run a grid into ``out/<name>/`` (resumed when already there) and return its rows.

        Args:
            name: the grid's folder under the claim's folder.
            models: display name -> ``model.json``.
            perturbations: the grid's ``perturbations:`` entries.
            data: the datalist (test split).
            **keys: more grid keys (``include_background``, ``metrics``, ``seed``, ...); a
                ``max_cases`` key limits the cases.

        Returns:
            The ``runs`` dataframe of its ``results.sqlite`` (recorded in :attr:`results`).
        """
        max_cases = keys.pop("max_cases", None)
        folder = self.out / name
        cfg = parse_config({"models": [{"name": k, "checkpoint": str(v)} for k, v in models.items()],
                            "data": {"datalist": str(data), "split": "test",
                                     **({"max_cases": max_cases} if max_cases else {})},
                            "perturbations": perturbations, "out": str(folder), "examples": 0, **keys},
                           base_dir=self.out, source=f"claim grid {name}")
        store = run_grid(cfg, progress=self.progress) / STORE_NAME
        self.results.append(str(store))
        with ResultStore(store) as results:
            return results.to_dataframe()

    def segmenter(self) -> tuple[str, dict[str, Any], TrainConfig]:
        """The segmentation network and loop of the claims: the demo's (a tiny UNet, 1 epoch, when quick).

        Returns:
            (architecture, network kwargs, training config with seed 0).
        """
        if self.quick:
            return DEMO_MODEL, dict(QUICK_UNET), DEMO_TRAIN.model_copy(update={"epochs": 1})
        return DEMO_MODEL, dict(DEMO_MODEL_KWARGS), DEMO_TRAIN

    def epochs(self, demo: int) -> int:
        """The epochs of a training: ``demo`` at demo or full scale, 1 when quick."""
        return 1 if self.quick else demo

    def train(self, datalist: Path, model: str, *, recipe: str = "standard", recipe_params: dict[str, Any] | None = None,
              model_kwargs: dict[str, Any] | None = None, config: TrainConfig, init: Path | None = None,
              **options: Any) -> Path:
        """Train a model, or reuse the one trained with the same settings (by config hash).

        Args:
            datalist: the training data.
            model: registry architecture name.
            recipe: training recipe name.
            recipe_params: its parameters.
            model_kwargs: network keyword arguments.
            config: loop settings (its seed tells the training seeds apart).
            init: a checkpoint whose weights start the training (fine-tuning).
            **options: more keyword arguments of :func:`~medrobust.training.train_model`.

        Returns:
            The trained model's ``model.json`` under ``models/<hash>/``.
        """
        key = {"datalist": str(datalist), "model": model, "recipe": recipe, "recipe_params": recipe_params or {},
               "model_kwargs": model_kwargs or {}, "config": config.model_dump(mode="json"),
               "init": str(init) if init else None, "options": {k: str(v) for k, v in sorted(options.items())}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        run = self.models / f"{recipe}-{digest}"
        history = run / "history.csv"
        if (run / "model.json").exists() and history.exists() and \
                len(history.read_text(encoding="utf-8").strip().splitlines()) - 1 >= config.epochs:
            return run / "model.json"
        train_model(datalist, model, run, recipe=recipe, recipe_params=recipe_params, model_kwargs=model_kwargs,
                    config=config, init=init, progress=self.progress, **options)
        return run / "model.json"


@dataclass
class ClaimResult:
    """One claim as re-measured.

    Attributes:
        claim: the claim's id (its registry name).
        title: a short title.
        statement: the claim as its paper makes it.
        source: which seed / paper.
        published: the published numbers, as text.
        ours_published: our numbers under the published protocol (their attack, steps,
            background included where they did), as text.
        published_protocol: that protocol in words.
        ours_strongest: our numbers under the strongest protocol, as text.
        strongest_protocol: that protocol in words.
        effect: the effect the verdict is taken on (with its interval and margin).
        effect_meaning: what the effect is (e.g. "PGD Dice minus VAFA Dice per case").
        verdict: one of :data:`~medrobust.reproduce.verdict.VERDICTS`.
        figure: a base64 PNG for the page (or None).
        notes: what a reader should know (left out, scaled down, changed).
        seconds: the claim's wall time.
        results: the ``results.sqlite`` files its numbers come from.
    """

    claim: str
    title: str
    statement: str
    source: str
    published: str
    ours_published: str
    published_protocol: str
    ours_strongest: str
    strongest_protocol: str
    effect: Effect
    effect_meaning: str
    verdict: str
    figure: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    results: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data (the figure left out).

        Returns:
            A dict of plain values.
        """
        out = {k: v for k, v in self.__dict__.items() if k != "figure"}
        out["effect"] = dict(self.effect.__dict__)
        return out


ClaimRun = Callable[[ClaimContext], ClaimResult]
CLAIMS: Registry[ClaimRun] = Registry("claim")

