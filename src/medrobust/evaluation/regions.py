"""Region threat models: where an attack may change the image (a grid entry's ``region:``).

A perturbation of the air around a patient is not a realistic threat; a region limits the
attack to the voxels an adversary (or a faulty scanner) could plausibly change:

- ``body``: the voxels above the image's background threshold (channel 0, threshold
  ``p1 + 0.1 (p99 - p1)`` of its intensities), holes filled in 3D
  (``scipy.ndimage.binary_fill_holes``) so that lungs and bowel gas inside the body count;
- ``{classes: [names], margin_mm: m}``: the reference label's voxels of those classes,
  grown by ``m`` mm (Euclidean distance in the case's spacing,
  ``scipy.ndimage.distance_transform_edt``);
- ``{mask: "masks/{id}.nii.gz"}``: a per-case mask file on the case's grid (``{id}`` is
  replaced by the case id; nonzero = inside).

Each row records the region and the fraction of voxels it lets the attack change.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from medrobust.evaluation.case_files import read_case_map

__all__ = ["REGION_FORMS", "Region", "parse_region"]

REGION_FORMS = "body, {classes: [names], margin_mm: m} or {mask: 'folder/{id}.nii.gz'}"


@dataclass(frozen=True)
class Region:
    """A parsed ``region:`` entry.

    Attributes:
        kind: ``"body"``, ``"classes"`` or ``"mask"``.
        classes: class names or indices (``kind == "classes"``).
        margin_mm: growth of the class region in mm.
        pattern: the per-case mask path with ``{id}`` (``kind == "mask"``).

    Example:
        >>> parse_region({"classes": ["gm"], "margin_mm": 2}).describe()
        'classes gm + 2 mm'
    """

    kind: str
    classes: tuple[int | str, ...] = ()
    margin_mm: float = 0.0
    pattern: str = ""

    def describe(self) -> str:
        """Human-readable form (stored in each row).

        Returns:
            e.g. ``"body"``, ``"classes gm + 2 mm"``, ``"mask masks/{id}.nii.gz"``.
        """
        if self.kind == "classes":
            return f"classes {', '.join(map(str, self.classes))} + {self.margin_mm:g} mm"
        return "body" if self.kind == "body" else f"mask {self.pattern}"

    def check(self, classes: Sequence[str], task: str) -> None:
        """Fail unless the region fits a model with these classes and task.

        Args:
            classes: the model's class names.
            task: ``"classification"`` or ``"segmentation"``.

        Raises:
            ValueError: naming ``region`` (class regions need a segmentation model and known classes).
        """
        if self.kind != "classes":
            return
        if task != "segmentation":
            raise ValueError("region: a class region needs segmentation labels; use body or a mask file")
        for c in self.classes:
            if not ((isinstance(c, str) and c in classes) or (isinstance(c, int) and 0 <= c < len(classes))):
                raise ValueError(f"region: class {c} is not a class of the model; allowed: {', '.join(classes)}")

    def mask(self, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str], case_id: str,
             spacing: Sequence[float] | None) -> torch.Tensor:
        """The 0/1 region of one case.

        Args:
            x: the image ``(1, C, *spatial)`` (model units; monotone in raw units).
            y: the reference label ``(1, 1, *spatial)`` (segmentation) or ``(1,)``.
            classes: the model's class names.
            case_id: the case id (for ``{id}`` in a mask pattern).
            spacing: voxel spacing in mm (None: 1 mm).

        Returns:
            ``(1, 1, *spatial)`` float 0/1 on x's device.

        Raises:
            ValueError: a mask file that is missing or does not match the image's grid.

        Example:
            >>> import torch
            >>> x = torch.zeros(1, 1, 8, 8, 8); x[..., 2:6, 2:6, 2:6] = 1.0
            >>> int(parse_region("body").mask(x, torch.zeros(1), [], "c", None).sum())
            64
        """
        spatial = tuple(x.shape[2:])
        if self.kind == "body":
            region = _body(x[0, 0].detach().float().cpu().numpy())
        elif self.kind == "classes":
            labels = y[0, 0].cpu().numpy()
            wanted = [list(classes).index(c) if isinstance(c, str) else c for c in self.classes]
            region = np.isin(labels, wanted)
            if self.margin_mm > 0 and region.any():
                sampling = list(spacing) if spacing is not None else [1.0] * len(spatial)
                region = ndimage.distance_transform_edt(~region, sampling=sampling) <= self.margin_mm
        else:
            region = read_case_map(self.pattern, case_id, spatial, "region: mask file")[0] != 0
        return torch.as_tensor(np.asarray(region, dtype=np.float32), device=x.device).reshape(1, 1, *spatial)


def _body(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    return ndimage.binary_fill_holes(image > low + 0.1 * (high - low))


def parse_region(value: object) -> Region:
    """A :class:`Region` from its YAML form.

    Args:
        value: ``"body"``, ``{"classes": [...], "margin_mm": m}`` or ``{"mask": pattern}``.

    Returns:
        The parsed region.

    Raises:
        ValueError: any other form (naming ``region`` and the allowed forms).

    Example:
        >>> parse_region("body").kind, parse_region({"mask": "m/{id}.nii.gz"}).pattern
        ('body', 'm/{id}.nii.gz')
    """
    if value == "body":
        return Region("body")
    if isinstance(value, dict) and "classes" in value and set(value) <= {"classes", "margin_mm"}:
        names, margin = value["classes"], value.get("margin_mm", 0.0)
        if isinstance(names, (list, tuple)) and names and all(isinstance(c, (int, str)) for c in names) and \
                isinstance(margin, (int, float)) and margin >= 0:
            return Region("classes", classes=tuple(names), margin_mm=float(margin))
    if isinstance(value, dict) and set(value) == {"mask"} and isinstance(value["mask"], str):
        return Region("mask", pattern=value["mask"])
    raise ValueError(f"region: got {value!r}; allowed: {REGION_FORMS}")
