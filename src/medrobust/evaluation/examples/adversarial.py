"""Adversarial images in raw units, in the source's format, and the ``manifest.json`` of their folder.

One writer for the grid and ``medrobust attack``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medrobust.data.safe_names import UniqueNames, safe_name
from medrobust.evaluation.types import Row

if TYPE_CHECKING:
    from medrobust.evaluation.types import Case


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
