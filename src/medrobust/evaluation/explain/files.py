"""The Grad-CAM file of a grid example, kept beside its example file (``<example>.gradcam.npz``).

:func:`save_example_cams` / :func:`load_example_cams` write and read it (read with
``allow_pickle=False``); :func:`prune_cams` deletes those whose example is gone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.evaluation.examples import read_npz, write_npz
from medrobust.evaluation.explain.compare import explain_pair
from medrobust.evaluation.explain.gradcam import GradCAMExplainer

CAM_SUFFIX = ".gradcam.npz"


def _plane(a: np.ndarray, idx: int | None) -> np.ndarray:
    """(C, *spatial) or (1, *spatial) -> (H, W) or (H, W, 3); 3D volumes cut at ``idx`` (last axis)."""
    if idx is not None:
        a = a[..., idx]
    return np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]


def cam_path(example_path: Path) -> Path:
    """The Grad-CAM file kept beside an example file ``name.npz`` -> ``name.gradcam.npz``.

    Args:
        example_path: the example's ``.npz`` path.

    Returns:
        The path of its Grad-CAM file, in the same folder.

    Example:
        >>> from pathlib import Path
        >>> from medrobust.evaluation.explain import cam_path
        >>> cam_path(Path("examples/unet-pgd-4-c1-1a2b3c4d.npz")).as_posix()
        'examples/unet-pgd-4-c1-1a2b3c4d.gradcam.npz'
    """
    return example_path.with_name(example_path.name.removesuffix(".npz") + CAM_SUFFIX)


def save_example_cams(example_path: Path, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                      info: dict[str, Any], target_layer: str | None = None) -> Path:
    """Grad-CAM of a clean and an adversarial case (B = 1), saved beside its example file.

    Each map explains its own predicted class. Saved (atomically): the 2D plane of image,
    adversarial image and both maps (3D: the slice, along the last axis, where the clean map
    is largest), ``iou`` (top-10% IoU over the whole map), ``layer`` and ``info``
    (str/number fields such as model, case_id, classes, low, high).

    Args:
        example_path: the example file the maps belong to (see :func:`cam_path`).
        model: the classifier (an Ensemble is explained by its members' mean map).
        x: the clean case.
        x_adv: the adversarial case.
        info: plain fields stored beside the maps.
        target_layer: as for :class:`GradCAMExplainer`.

    Returns:
        The written ``.gradcam.npz`` path; read it with :func:`load_example_cams`.

    Raises:
        ValueError: as :meth:`GradCAMExplainer.__call__`.

    Shape:
        - x, x_adv: ``(1, C, H, W)`` or ``(1, C, D, H, W)``
        - saved image, adversarial, cam_clean, cam_adv: ``(H, W)``, or ``(H, W, 3)`` for an RGB image

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.explain import load_example_cams, save_example_cams
        >>> x = torch.rand(1, 1, 8, 8)
        >>> path = save_example_cams(Path(tempfile.mkdtemp()) / "ex.npz", net, x, x + 0.05, {"case_id": "c1"})
        >>> cams = load_example_cams(path)
        >>> path.name, cams["cam_clean"].shape, cams["layer"], 0 <= cams["iou"] <= 1, cams["info"]
        ('ex.gradcam.npz', (8, 8), '1', True, {'case_id': 'c1'})
    """
    explainer = GradCAMExplainer(model, target_layer)
    clean, adv, ious = explain_pair(explainer, x, x_adv)
    iou = float(ious[0])
    c = torch.cat([clean, adv]).cpu().numpy()
    idx = int(c[0, 0].reshape(-1, c.shape[-1]).sum(0).argmax()) if x.ndim == 5 else None
    arrays = {"image": _plane(x[0].detach().cpu().numpy(), idx), "adversarial": _plane(x_adv[0].detach().cpu().numpy(), idx),
              "cam_clean": _plane(c[0], idx), "cam_adv": _plane(c[1], idx), "iou": np.asarray(iou),
              "layer": np.asarray(explainer.layer_name), "slice": np.asarray(-1 if idx is None else idx)}
    return write_npz(cam_path(example_path), arrays, info)


def load_example_cams(path: Path) -> dict[str, Any]:
    """Read a ``.gradcam.npz`` (never unpickles): arrays, ``iou`` and ``layer`` as Python values, ``info``.

    Args:
        path: a file written by :func:`save_example_cams`.

    Returns:
        ``image``, ``adversarial``, ``cam_clean``, ``cam_adv`` (arrays), ``iou`` (float),
        ``layer`` (str), ``slice`` (int, -1 for 2D) and ``info`` (dict).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from medrobust.evaluation.examples import write_npz
        >>> from medrobust.evaluation.explain import load_example_cams
        >>> plane = np.zeros((4, 4), dtype=np.float32)
        >>> arrays = {"image": plane, "adversarial": plane, "cam_clean": plane, "cam_adv": plane,
        ...           "iou": np.asarray(0.25), "layer": np.asarray("layer4"), "slice": np.asarray(-1)}
        >>> cams = load_example_cams(write_npz(Path(tempfile.mkdtemp()) / "ex.gradcam.npz", arrays, {"case_id": "c1"}))
        >>> cams["iou"], cams["layer"], cams["slice"], cams["info"]
        (0.25, 'layer4', -1, {'case_id': 'c1'})
    """
    out = read_npz(path)
    out["iou"], out["layer"], out["slice"] = float(out["iou"]), str(out["layer"]), int(out["slice"])
    return out


def prune_cams(folder: Path) -> int:
    """Delete Grad-CAM files whose example file is gone (the grid keeps only the worst cases).

    Args:
        folder: the examples folder.

    Returns:
        The number of files deleted.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medrobust.evaluation.explain import prune_cams
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.gradcam.npz", "b.npz", "b.gradcam.npz"):
        ...     (folder / name).touch()
        >>> prune_cams(folder), sorted(p.name for p in folder.iterdir())
        (1, ['b.gradcam.npz', 'b.npz'])
    """
    removed = 0
    for path in Path(folder).glob(f"*{CAM_SUFFIX}"):
        if not path.with_name(path.name.removesuffix(CAM_SUFFIX) + ".npz").exists():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
