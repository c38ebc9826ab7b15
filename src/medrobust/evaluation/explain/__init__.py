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

- :mod:`~medrobust.evaluation.explain.gradcam`: the maps (``GradCAMExplainer``,
  ``layer_candidates``).
- :mod:`~medrobust.evaluation.explain.compare`: how far an attack moves them
  (``top_fraction_iou``, ``explain_pair``).
- :mod:`~medrobust.evaluation.explain.files`: the ``.gradcam.npz`` beside a grid example
  (``cam_path``, ``save_example_cams``, ``load_example_cams``, ``prune_cams``).
"""
from __future__ import annotations

from medrobust.evaluation.explain.compare import TOP_FRACTION, explain_pair, top_fraction_iou
from medrobust.evaluation.explain.files import CAM_SUFFIX, cam_path, load_example_cams, prune_cams, save_example_cams
from medrobust.evaluation.explain.gradcam import GradCAMExplainer, layer_candidates

__all__ = ["CAM_SUFFIX", "TOP_FRACTION", "GradCAMExplainer", "cam_path", "explain_pair", "layer_candidates",
           "load_example_cams", "prune_cams", "save_example_cams", "top_fraction_iou"]

