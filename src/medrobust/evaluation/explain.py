"""Grad-CAM (MONAI) for 2D and 3D classifiers, and how far an attack moves it.

``GradCAMExplainer(model)(x)`` gives one map per sample, ``(B, 1, *spatial)`` in [0, 1]
(1 = the strongest evidence for the explained class), computed with
``monai.visualize.GradCAM`` on ``target_layer``. Without one, the layer is found
generically: the last module, in execution order, whose output is still a spatial feature
map ``(B, C, *spatial)`` with more than one voxel, i.e. the output of the last
convolutional stage (resnet: ``layer4``, densenet121: ``class_layers.relu``,
efficientnet-b0: ``_swish``; on inputs so small that the last stage is one voxel, an
earlier one). An :class:`~medrobust.models.ensemble.Ensemble` is explained
as the mean of its members' maps for the ensemble's class.

:func:`top_fraction_iou` compares two maps by the overlap (IoU) of their top-10% voxels.
:func:`save_example_cams` / :func:`load_example_cams` keep the maps of a grid example beside
its example file (``<example>.gradcam.npz``, read with ``allow_pickle=False``).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.visualize import GradCAM
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from medrobust.evaluation.examples import read_npz, write_npz
from medrobust.models.ensemble import Ensemble
from medrobust.models.inference import infer
from medrobust.models.wrappers import SlidingWindow

TOP_FRACTION = 0.1
CAM_SUFFIX = ".gradcam.npz"


class _PerSampleScore(ModelWithHooks):
    """MONAI's hooks, scoring each sample's own class.

    MONAI indexes ``logits[:, class_idx]``; with one class per sample (a ``(B,)`` tensor) that
    is a ``(B, B)`` block whose sum mixes the samples' gradients.
    """

    def class_score(self, logits: torch.Tensor, class_idx: int | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(class_idx, device=logits.device).reshape(-1)
        return logits.gather(1, idx.expand(logits.shape[0])[:, None]).squeeze(1)


def _unit_range(cam: torch.Tensor) -> torch.Tensor:
    """Scale each sample's map to [0, 1] by its maximum (an all-zero map stays zero).

    MONAI's default post-processing maps (min, max) to (1, 0), flipping the map.
    """
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (cam / peak.reshape(-1, *([1] * (cam.ndim - 1)))).detach()


def layer_candidates(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Module names whose output is a spatial feature map for ``x``, the best Grad-CAM layer first.

    Best = the last (execution order) with more than one voxel; modules that enlarge their
    input (padding, upsampling) or run more than once per forward (a shared activation, which
    MONAI's hooks cannot follow) are left out. Maps of a single voxel come last.

    Args:
        model: a classifier taking ``x``; it is run once without gradients.
        x: an input batch, ``(B, C, *spatial)``.

    Returns:
        Module names (as in ``model.named_modules()``) whose output is ``(B, C', *spatial')``
        with ``x``'s number of dimensions, ordered best first.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> from medrobust.evaluation.explain import layer_candidates
        >>> layer_candidates(net, torch.rand(2, 1, 8, 8))  # ReLU, then conv; the 1-voxel pool last
        ['1', '0', '2']
    """
    fired: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, inputs: tuple[object, ...], out: object, name: str = name) -> None:
            if not (isinstance(out, torch.Tensor) and out.ndim == x.ndim and out.shape[0] == x.shape[0]):
                return
            size = math.prod(out.shape[2:])
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if first is None or first.ndim != x.ndim or size <= math.prod(first.shape[2:]):  # padding is no stage
                fired.append((name, size))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    calls = {name: sum(n == name for n, _ in fired) for name, _ in fired}
    once = [(name, size) for name, size in reversed(fired) if calls[name] == 1]
    return [n for n, size in once if size > 1] + [n for n, size in once if size == 1]


class GradCAMExplainer:
    """Grad-CAM maps of a classifier (2D or 3D), reusable across batches.

    Args:
        model: maps ``(B, C, *spatial)`` to logits ``(B, K)``; an Ensemble is explained as the
            mean of its members' maps. It is copied: MONAI's hooks stay on the copy.
        target_layer: a module name of ``model`` (of each member for an Ensemble); None
            takes the best of :func:`layer_candidates` that MONAI's hooks can follow (a
            layer whose output is later changed in place cannot be hooked; the next is tried).
            A :class:`~medrobust.models.wrappers.SlidingWindow` is unwrapped.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        - class_idx: ``()`` or ``(B,)``
        - output: ``(B, 1, H, W)`` or ``(B, 1, D, H, W)``, float in [0, 1]

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> from medrobust.evaluation.explain import GradCAMExplainer
        >>> explainer = GradCAMExplainer(net)
        >>> cams = explainer(torch.rand(2, 1, 8, 8))
        >>> cams.shape, explainer.layer_name, bool(cams.min() >= 0 and cams.max() <= 1)
        (torch.Size([2, 1, 8, 8]), '1', True)
    """

    TRIES = 4

    def __init__(self, model: nn.Module, target_layer: str | None = None) -> None:
        if isinstance(model, SlidingWindow):
            model = model.model
        self.source = model
        self.ensemble = model if isinstance(model, Ensemble) else None
        self.members = ([GradCAMExplainer(m, target_layer) for m in model.members]
                        if isinstance(model, Ensemble) else [])
        self.layer = target_layer
        self._cam: GradCAM | None = None

    def _copy(self) -> nn.Module:
        """The caller's model keeps its mode and never carries MONAI's hooks: they go on a copy."""
        return copy.deepcopy(self.source).eval()

    def _run(self, net: nn.Module, layer: str, x: torch.Tensor, class_idx: int | torch.Tensor | None) -> torch.Tensor:
        names = dict(net.named_modules())
        if layer not in names:
            shown = ", ".join(n for n in list(names)[-8:] if n)
            raise ValueError(f"target_layer: {layer!r} is not a module of {type(net).__name__} (last modules: {shown})")
        hooks = _PerSampleScore(net, layer, register_forward=True, register_backward=True)
        cam = GradCAM(nn_module=hooks, target_layers=layer, postprocessing=_unit_range)  # type: ignore[arg-type]  # MONAI takes its ModelWithHooks too
        out = cam(x, class_idx=class_idx)
        self._cam, self.layer = cam, layer
        return out

    def __call__(self, x: torch.Tensor, class_idx: int | torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``(B, 1, *spatial)`` in [0, 1] for ``class_idx`` (int, ``(B,)``, or None = predicted).

        Args:
            x: images ``(B, C, *spatial)`` in model units; gradients are taken on a copy.
            class_idx: the class to explain: one for all samples, one per sample, or None
                for each sample's predicted class.

        Returns:
            One map per sample, each scaled to [0, 1] by its maximum (an all-zero map stays
            zero).

        Raises:
            ValueError: ``x`` is not 4D or 5D, ``target_layer`` is not a module of the
                model, or no candidate layer gives a map.
        """
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be images (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
        if self.ensemble is not None:
            if class_idx is None:
                class_idx = infer(self.ensemble, x).argmax(1)
            return _unit_range(torch.stack([m(x, class_idx) for m in self.members]).mean(0))
        # a fresh leaf that needs grad, so the layer's gradient exists even with frozen weights
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            if self._cam is not None:
                return self._cam(x, class_idx=class_idx).float()
            net = self._copy()
            if self.layer is not None:
                return self._run(net, self.layer, x, class_idx).float()
            tried = layer_candidates(net, x)[: self.TRIES]
            for i, layer in enumerate(tried):
                try:
                    return self._run(net if i == 0 else self._copy(), layer, x, class_idx).float()
                except RuntimeError:  # hooked output modified in place further on
                    continue
        raise ValueError(f"target_layer: no layer of {type(self.source).__name__} gives a Grad-CAM map for input "
                         f"{tuple(x.shape)} (tried {', '.join(tried) or 'none'}); name one (model.named_modules())")

    @property
    def layer_name(self) -> str:
        """The explained layer ("" before the first call when it is found automatically)."""
        if self.ensemble is not None:
            return ", ".join(m.layer_name for m in self.members)
        return self.layer or ""


def top_fraction_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """IoU of the top ``fraction`` voxels of two maps, per sample ``(B,)`` in [0, 1].

    Each mask holds exactly ``ceil(fraction * N)`` voxels (``torch.topk``; ties are broken by
    position), so a flat map does not turn into an all-voxel mask.

    Args:
        a: maps of one kind (e.g. clean Grad-CAM).
        b: maps to compare, same shape.
        fraction: the share of voxels in each mask, in (0, 1].

    Returns:
        The IoU per sample, float32 on the CPU.

    Raises:
        ValueError: the shapes differ or ``fraction`` is outside (0, 1].

    Shape:
        - a, b: ``(B, *)``, N = the number of entries per sample
        - output: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.evaluation.explain import top_fraction_iou
        >>> a = torch.arange(10.0).reshape(1, 1, 10)
        >>> top_fraction_iou(a, a, 0.2).tolist(), top_fraction_iou(a, a.flip(-1), 0.2).tolist()
        ([1.0], [0.0])
    """
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    fa, fb = a.detach().flatten(1), b.detach().flatten(1)
    k = max(1, math.ceil(fraction * fa.shape[1]))
    ma = torch.zeros_like(fa, dtype=torch.bool).scatter_(1, fa.topk(k, dim=1).indices, True)
    mb = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, fb.topk(k, dim=1).indices, True)
    return ((ma & mb).sum(1) / (ma | mb).sum(1)).float().cpu()


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


def explain_pair(explainer: GradCAMExplainer, x: torch.Tensor, x_adv: torch.Tensor,
                 fraction: float = TOP_FRACTION) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean maps, adversarial maps (each for its own predicted class) and their top-fraction IoU ``(B,)``.

    Both batches go through the explainer in one call.

    Args:
        explainer: the explainer of the model.
        x: clean images.
        x_adv: adversarial images, same shape.
        fraction: the share of voxels compared by :func:`top_fraction_iou`.

    Returns:
        ``(clean maps, adversarial maps, IoU)``.

    Shape:
        - x, x_adv: ``(B, C, *spatial)``
        - clean maps, adversarial maps: ``(B, 1, *spatial)``
        - IoU: ``(B,)``

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> from medrobust.evaluation.explain import GradCAMExplainer, explain_pair
        >>> x = torch.rand(3, 1, 8, 8)
        >>> clean, adv, iou = explain_pair(GradCAMExplainer(net), x, x + 0.05)
        >>> clean.shape, adv.shape, iou.shape
        (torch.Size([3, 1, 8, 8]), torch.Size([3, 1, 8, 8]), torch.Size([3]))
    """
    cams = explainer(torch.cat([x, x_adv]))
    clean, adv = cams[: x.shape[0]], cams[x.shape[0]:]
    return clean, adv, top_fraction_iou(clean, adv, fraction)

