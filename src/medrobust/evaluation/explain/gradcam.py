"""Grad-CAM (MONAI) maps of 2D and 3D classifiers, with the target layer found generically.

``GradCAMExplainer(model)(x)`` gives one map per sample, ``(B, 1, *spatial)`` in [0, 1]
(1 = the strongest evidence for the explained class), computed with
``monai.visualize.GradCAM`` on ``target_layer``. Without one, the layer is found
generically (:func:`layer_candidates`): the last module, in execution order, whose output
is still a spatial feature map ``(B, C, *spatial)`` with more than one voxel. An
:class:`~medrobust.models.ensemble.Ensemble` is explained as the mean of its members' maps
for the ensemble's class.
"""
from __future__ import annotations

import copy
import math

import torch
from monai.visualize import GradCAM
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from medrobust.models.ensemble import Ensemble
from medrobust.models.inference import infer
from medrobust.models.wrappers import SlidingWindow


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
