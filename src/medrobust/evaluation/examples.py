"""Files the grid writes beside the store: example slices (``.npz``) and adversarial images.

The grid keeps, per model, the ``k`` cases whose worst run lowered the score the most
(``drop = clean_score - adv_score``; for classifiers plus a small term for the fall of the
true-class probability so ties break by confidence). For each such run it saves one 2D
slice (the slice of a volume holding the most foreground in the label, else the central
one) with the clean and adversarial image, both predictions and the label. Files are
plain numeric/str arrays written with ``np.savez_compressed`` and read back with
``allow_pickle=False``. The report picks the same runs from the store (``select_examples``).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from medrobust.data.safe_names import UniqueNames, safe_name
from medrobust.evaluation.types import Row

if TYPE_CHECKING:
    from medrobust.evaluation.types import Case

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


def slice_index(label: np.ndarray) -> int:
    """Index along the last axis of a 3D label (D, H, W) with the most foreground voxels.

    Args:
        label: an integer label map; foreground is ``label > 0``.

    Returns:
        The index of the slice with the most foreground (the first on ties), or the central
        index when there is no foreground.

    Shape:
        - label: ``(..., W)``, typically ``(D, H, W)``

    Example:
        >>> import numpy as np
        >>> from medrobust.evaluation.examples import slice_index
        >>> label = np.zeros((4, 4, 6), dtype=np.int64)
        >>> label[1:3, 1:3, 4] = 1
        >>> slice_index(label), slice_index(np.zeros((4, 4, 6)))
        (4, 3)
    """
    fg = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else label.shape[-1] // 2


def _plane(a: np.ndarray, spatial_dims: int, idx: int | None) -> np.ndarray:
    """(C, *spatial) or (*spatial) -> a 2D plane (H, W), (H, W, C) for RGB images."""
    if spatial_dims == 3:
        a = a[..., idx]
    if a.ndim == 3:  # channels first
        a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    return a


def save_example(path: Path, *, image: np.ndarray, adversarial: np.ndarray, label: np.ndarray | int,
                 pred_clean: np.ndarray | int, pred_adv: np.ndarray | int, info: dict[str, Any]) -> Path:
    """Write one run's example slice atomically.

    A 3D case is cut at the slice (last axis) with the most labelled foreground, or the
    central slice for a classified volume; a 3-channel image is stored channels last (RGB).

    Args:
        path: the ``.npz`` file to write (its folder is created).
        image: the clean image, float32 in model units (2D or 3D).
        adversarial: the adversarial image, same shape.
        label: (*spatial) integer map (segmentation) or the class int.
        pred_clean: the clean prediction, like ``label``.
        pred_adv: the adversarial prediction, like ``label``.
        info: str/number fields kept beside (model, perturbation, eps, eps_unit, case_id,
            task, clean_score, adv_score, classes (list of str), low, high (valid range)).

    Returns:
        ``path``. The file holds ``image``, ``adversarial`` (float32 planes), ``label``,
        ``pred_clean``, ``pred_adv`` (int16) and ``info`` (with ``slice``: the index, or -1
        for 2D); read it with :func:`load_example`.

    Shape:
        - image, adversarial: ``(C, *spatial)``, spatial 2D or 3D (3D is cut along its last axis)
        - label, pred_clean, pred_adv: ``(*spatial)``, or ``()`` for a class
        - saved planes: the 2D spatial shape ``(H, W)``, or ``(H, W, 3)`` for RGB

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import load_example, save_example
        >>> x = np.random.default_rng(0).random((1, 8, 8, 5), dtype=np.float32)
        >>> label = np.zeros((8, 8, 5), dtype=np.int64)
        >>> label[2:6, 2:6, 1] = 1
        >>> path = save_example(Path(tempfile.mkdtemp()) / "ex.npz", image=x, adversarial=x + 0.01, label=label,
        ...                     pred_clean=label, pred_adv=np.zeros_like(label), info={"case_id": "c1"})
        >>> ex = load_example(path)
        >>> ex["image"].shape, ex["label"].shape, ex["info"]
        ((8, 8), (8, 8), {'case_id': 'c1', 'slice': 1})
    """
    spatial_dims = image.ndim - 1
    seg = np.ndim(label) > 0
    # 3D: the slice with the most labelled foreground, or the central one for a classified volume
    idx = (slice_index(np.asarray(label)) if seg else image.shape[-1] // 2) if spatial_dims == 3 else None
    arrays: dict[str, np.ndarray] = {
        "image": _plane(np.asarray(image, np.float32), spatial_dims, idx),
        "adversarial": _plane(np.asarray(adversarial, np.float32), spatial_dims, idx),
    }
    for key, value in (("label", label), ("pred_clean", pred_clean), ("pred_adv", pred_adv)):
        v = np.asarray(value, dtype=np.int16)
        arrays[key] = v[..., idx] if (seg and idx is not None) else v
    return write_npz(path, arrays, {**info, "slice": -1 if idx is None else idx})


def write_npz(path: Path, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Write arrays plus plain ``info`` values atomically as a compressed ``.npz``.

    Shared by example slices, corruption thumbnails and Grad-CAM panels. ``info`` values
    are stored as arrays named ``info_<key>``, so they must be numbers, strings or lists of
    them (nothing that needs pickling).

    Args:
        path: the file to write (its folder is created; an existing file is replaced).
        arrays: {name: numeric or string array}.
        info: {key: plain value}.

    Returns:
        ``path``.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import read_npz, write_npz
        >>> path = write_npz(Path(tempfile.mkdtemp()) / "a.npz", {"map": np.eye(2)}, {"classes": ["a", "b"]})
        >>> data = read_npz(path)
        >>> data["map"].tolist(), data["info"]
        ([[1.0, 0.0], [0.0, 1.0]], {'classes': ['a', 'b']})
    """
    from medrobust.data.io import atomic_path  # lazy: data is a sibling part

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            payload: dict[str, Any] = {**arrays, **{f"info_{k}": np.asarray(v) for k, v in info.items()}}
            np.savez_compressed(f, **payload)
    return path


def read_npz(path: Path) -> dict[str, Any]:
    """Read a :func:`write_npz` file (never unpickles): arrays plus ``info`` (plain Python values).

    Args:
        path: a file written by :func:`write_npz`.

    Returns:
        {array name: np.ndarray} plus ``"info"``: {key: Python value} (see :func:`write_npz`
        for an example).

    Raises:
        ValueError: the file holds pickled objects.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import read_npz, write_npz
        >>> path = write_npz(Path(tempfile.mkdtemp()) / "t.npz", {"image": np.zeros((2, 3))}, {"eps": 4.0})
        >>> data = read_npz(path)
        >>> sorted(data), data["image"].shape, data["info"]
        (['image', 'info'], (2, 3), {'eps': 4.0})
    """
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files if not k.startswith("info_")}
        out["info"] = {k[5:]: z[k].tolist() for k in z.files if k.startswith("info_")}
    return out


def load_example(path: Path) -> dict[str, Any]:
    """Read an example file written by :func:`save_example`.

    Args:
        path: the example's ``.npz``.

    Returns:
        As :func:`read_npz`: ``image``, ``adversarial``, ``label``, ``pred_clean``,
        ``pred_adv`` and ``info``.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import load_example, save_example
        >>> x = np.zeros((3, 4, 4), dtype=np.float32)  # an RGB image, classified
        >>> path = save_example(Path(tempfile.mkdtemp()) / "ex.npz", image=x, adversarial=x, label=1,
        ...                     pred_clean=1, pred_adv=0, info={"classes": ["benign", "malignant"]})
        >>> ex = load_example(path)
        >>> ex["image"].shape, int(ex["label"]), int(ex["pred_adv"]), ex["info"]["classes"]
        ((4, 4, 3), 1, 0, ['benign', 'malignant'])
    """
    return read_npz(path)


def save_adversarial(folder: Path, case: Case, row: Row, x_adv: torch.Tensor,
                     manifest_fields: Mapping[str, Any] | None = None) -> Path | None:
    """Record a run in the folder's ``manifest.json``; a segmentation case's image in its source's format.

    The adversarial image is written in raw units, float32 (the one implementation for the
    grid and ``medrobust attack``). When the case was not resampled, the image is the source scan plus the perturbation in
    raw units (source geometry, NIfTI header; intensities outside a CT window survive);
    otherwise (resampled, or channels from several files) the adversarial image mapped back
    to raw units on the dataset's grid. The format is the source's (:mod:`medrobust.data.writers`).

    Args:
        folder: where the image and the manifest go.
        case: the prepared case (its ``x``, ``imap`` and ``item["meta"]``: ``source``,
            ``affine``, optional ``grid_affine``).
        row: the case's store row (norms, scores, budget); the manifest entry of an earlier
            run of the same case id is replaced.
        x_adv: the adversarial image, model units.
        manifest_fields: extra top-level manifest entries (checkpoint, data, seed, ...).

    Returns:
        The image's path ``folder/<name><suffix>``, or None for a classification case
        (recorded in the manifest only). The name is the case id made safe and unique in
        the folder (:class:`~medrobust.data.safe_names.UniqueNames`); the manifest maps
        each id to its file.

    Shape:
        - x_adv: ``(1, C, *spatial)``, the shape of ``case.x``
        - written image: the source's shape; on the dataset grid ``(*spatial)`` for one
          channel, ``(*spatial, C)`` otherwise

    Example:
        >>> import json, tempfile
        >>> import numpy as np, torch
        >>> from pathlib import Path
        >>> from medrobust.data.io import read_nifti, write_nifti
        >>> from medrobust.evaluation.examples import save_adversarial
        >>> from medrobust.evaluation.types import Case, Outcome, Row
        >>> from medrobust.units import IntensityMap
        >>> folder = Path(tempfile.mkdtemp())
        >>> raw = np.linspace(-50, 50, 64, dtype=np.float32).reshape(4, 4, 4)  # HU
        >>> src = write_nifti(folder / "ct.nii.gz", raw, np.eye(4))
        >>> imap = IntensityMap.ct_window(-100, 100)
        >>> x = imap.raw_to_model(torch.from_numpy(raw))[None, None]
        >>> case = Case(id="c1", item={"meta": {"source": str(src), "affine": np.eye(4)}}, x=x,
        ...             y=torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), imap=imap, model=torch.nn.Identity(),
        ...             clean_logits=torch.zeros(1, 2, 4, 4, 4), clean=Outcome(score=1.0), data_range=1.0)
        >>> row = Row(config_hash="h", model="m", perturbation="pgd", kind="attack", attack="pgd", eps_stated=2.0,
        ...           eps_unit="HU", case_id="c1", task="segmentation", score_name="dice", clean_score=1.0,
        ...           adv_score=0.5, norm="linf")
        >>> path = save_adversarial(folder / "adv", case, row, x + 0.01)  # + 0.01 model units = + 2 HU
        >>> adv, meta = read_nifti(path)
        >>> path.name, adv.shape, round(float((adv - raw).mean()), 3)
        ('c1.nii.gz', (4, 4, 4), 2.0)
        >>> json.loads((folder / "adv" / "manifest.json").read_text())["budget"]
        {'norm': 'linf', 'eps': 2.0, 'unit': 'HU'}
    """
    from medrobust.data.io import write_json_atomic
    from medrobust.data.writers import output_note, output_suffix

    source = case.item["meta"]["source"]
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": []}
    names = UniqueNames({c["id"]: c["image"] for c in manifest["cases"] if c.get("image")})
    path = None
    if case.segmentation:
        path = _write_adversarial(folder / names.name(row.case_id, output_suffix(source)), case, x_adv)
    manifest.update({"model": row.model, "attack": row.attack, "options": json.loads(row.options_json or "{}"),
                     "budget": {"norm": row.norm, "eps": row.eps_stated, "unit": row.eps_unit},
                     "images": "raw intensities of the source scan plus the perturbation mapped to raw units, "
                               "float32, source geometry (and NIfTI header)", **(manifest_fields or {})})
    entry = {"id": row.case_id, "image": path.name if path else None, "source": str(source),
             **({"format": output_note(source)} if path else {}),
             "score_name": row.score_name, "clean_score": row.clean_score, "adv_score": row.adv_score,
             **{k: getattr(row, k) for k in ("linf_raw", "l2_raw", "linf_model", "l2_model")}}
    manifest["cases"] = [c for c in manifest["cases"] if c.get("id") != row.case_id] + [entry]
    write_json_atomic(manifest_path, manifest)
    return path


def _write_adversarial(path: Path, case: Case, x_adv: torch.Tensor) -> Path:
    """The adversarial image in raw units at ``path`` (see :func:`save_adversarial`)."""
    from medrobust.data.readers import read_image
    from medrobust.data.writers import write_image
    x, imap, source = case.x, case.imap, case.item["meta"]["source"]
    delta = (imap.model_to_raw(x_adv[0].double()) - imap.model_to_raw(x[0].double())).cpu().numpy()
    raw, meta = read_image(source) if isinstance(source, (str, Path)) else (None, {})
    if raw is not None and raw.size == delta.size:  # raw (C, X, Y, Z) as read
        image, affine, header = raw + delta.reshape(raw.shape), meta["affine"], meta.get("header")
    else:  # (C, *grid): the writer puts NIfTI channels last
        grid = case.item["meta"].get("grid_affine", case.item["meta"]["affine"])
        image, affine, header = imap.model_to_raw(x_adv[0].double()).cpu().numpy(), np.asarray(grid, np.float64), None
    image = image[0] if image.shape[0] == 1 else image
    return write_image(path, image.astype(np.float32), affine, header=header, dtype=np.float32)


def adversarial_folder(out: Path, row: Row) -> Path:
    """The grid's folder for the adversarial images of one (model, perturbation, eps).

    Args:
        out: the grid's output folder.
        row: a store row; its model, perturbation and eps_stated name the folder.

    Returns:
        ``out/adversarial/<model>/<perturbation>/eps<eps>``, names made safe
        (:func:`~medrobust.data.safe_names.safe_name`): a model named ``../x`` stays inside.

    Example:
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import adversarial_folder
        >>> from medrobust.evaluation.types import Row
        >>> row = Row(config_hash="h", model="unet", perturbation="pgd", kind="attack", attack="pgd",
        ...           eps_stated=4.0, eps_unit="1/255", case_id="c1", task="segmentation", score_name="dice",
        ...           clean_score=0.9, adv_score=0.4)
        >>> adversarial_folder(Path("results"), row).as_posix()
        'results/adversarial/unet/pgd/eps4'
        >>> row.model = "../ESCAPED_model"
        >>> adversarial_folder(Path("results"), row).as_posix()
        'results/adversarial/ESCAPED_model-e9f0a76d/pgd/eps4'
    """
    return Path(out) / "adversarial" / safe_name(row.model) / safe_name(row.perturbation) / f"eps{row.eps_stated:g}"
