"""Targets of targeted attacks: what a grid entry's ``target:`` asks for, per case.

A targeted attack needs a target; the true label is not one (attacking "towards" it makes
the model look *more* robust). The forms:

- classification: ``least_likely`` (the clean prediction's least likely class),
  ``random`` (a class other than the label, drawn from the run's seed and the case id) or
  ``class:K`` (a class index or name);
- segmentation: ``{map: {from_class: to_class}}``: every voxel labelled ``from_class``
  should be predicted ``to_class`` (``{map: {tumour: background}}``, the clinically
  dangerous attack); the other voxels keep their label. Or ``{labels: "targets/{id}.nii.gz"}``:
  a per-case target label map on the grid the model sees (``{id}`` is the case id).

Targeted rows report the target success beside the score: the fraction of samples
(classification) or of the mapped voxels (segmentation) predicted as their target.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["TARGET_FORMS", "Target", "parse_target"]

TARGET_FORMS = "least_likely, random, class:K, {map: {from_class: to_class}} or {labels: 'folder/{id}.nii.gz'}"


@dataclass(frozen=True)
class Target:
    """A parsed ``target:`` entry.

    Attributes:
        kind: ``"least_likely"``, ``"random"``, ``"class"``, ``"map"`` or ``"labels"``.
        cls: the class (index or name) for ``kind == "class"``.
        mapping: ``{from_class: to_class}`` (indices or names) for ``kind == "map"``.
        pattern: the per-case target file with ``{id}`` for ``kind == "labels"``.

    Example:
        >>> parse_target({"map": {"gm": "background"}}).describe()
        'map gm -> background'
    """

    kind: str
    cls: int | str | None = None
    mapping: tuple[tuple[int | str, int | str], ...] = ()
    pattern: str = ""

    @property
    def task(self) -> str:
        """The task this target is for: ``"segmentation"`` for a map or label files, else ``"classification"``."""
        return "segmentation" if self.kind in ("map", "labels") else "classification"

    def describe(self) -> str:
        """Human-readable form (the store and the report show it).

        Returns:
            e.g. ``"least_likely"``, ``"class 2"``, ``"map tumour -> background"``.
        """
        if self.kind == "class":
            return f"class {self.cls}"
        if self.kind == "map":
            return "map " + ", ".join(f"{a} -> {b}" for a, b in self.mapping)
        return f"labels {self.pattern}" if self.kind == "labels" else self.kind

    def check(self, classes: Sequence[str], task: str) -> None:
        """Fail unless the target fits a model with these classes and task.

        Args:
            classes: the model's class names (index = class).
            task: ``"classification"`` or ``"segmentation"``.

        Raises:
            ValueError: naming ``target`` and the allowed values.

        Example:
            >>> parse_target("class:3").check(["a", "b", "c"], "classification")
            Traceback (most recent call last):
                ...
            ValueError: target: class 3 is not a class of the model; allowed: 0-2 or a, b, c
        """
        if task != self.task:
            allowed = "least_likely, random or class:K" if task == "classification" else \
                "{map: {from: to}} or {labels: 'folder/{id}.nii.gz'}"
            raise ValueError(f"target: {self.describe()!r} is for {self.task}; a {task} model takes {allowed}")
        for value in [self.cls] if self.kind == "class" else [v for pair in self.mapping for v in pair]:
            _index(value, classes)

    def labels(self, y: torch.Tensor, clean_logits: torch.Tensor, classes: Sequence[str], seed: int,
               case_id: str) -> torch.Tensor:
        """The target labels of one case, in ``y``'s shape.

        Args:
            y: the true labels ``(B,)`` or ``(B, 1, *spatial)``.
            clean_logits: the clean prediction ``(B, K)`` or ``(B, K, *spatial)``.
            classes: the model's class names.
            seed: the run's seed (``random`` draws from it and the case id).
            case_id: the case id.

        Returns:
            Target labels, ``y``'s shape, dtype and device.

        Example:
            >>> import torch
            >>> parse_target("least_likely").labels(torch.tensor([0]), torch.tensor([[3.0, -1.0, 1.0]]),
            ...                                     ["a", "b", "c"], 0, "c1")
            tensor([1])
        """
        if self.kind == "least_likely":
            return clean_logits.argmin(1).to(y)
        if self.kind == "class":
            return torch.full_like(y, _index(self.cls, classes))
        if self.kind == "random":
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(case_id.encode()))
            shift = torch.randint(1, len(classes), tuple(y.shape), generator=gen).to(y.device)
            return (y + shift) % len(classes)  # uniform over the classes other than the label
        if self.kind == "labels":
            return _target_file(self.pattern, case_id, y, len(classes))
        out = y.clone()
        for source, dest in self.mapping:
            out[y == _index(source, classes)] = _index(dest, classes)
        return out

    def success(self, adv_logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction of samples (classification) or mapped voxels (segmentation) predicted as the target.

        Args:
            adv_logits: the prediction on the adversarial image.
            y: the true labels.
            target: the target labels (:meth:`labels`).

        Returns:
            The success rate in [0, 1] (NaN for a map whose source classes are absent).

        Example:
            >>> import torch
            >>> parse_target("class:1").success(torch.tensor([[0.0, 2.0]]), torch.tensor([0]), torch.tensor([1]))
            1.0
        """
        pred = adv_logits.argmax(1, keepdim=y.ndim > 1)
        asked = target != y if self.kind in ("map", "labels") else torch.ones_like(y, dtype=torch.bool)
        n = int(asked.sum())
        return float(((pred == target) & asked).sum()) / n if n else float("nan")


def _index(value: int | str | None, classes: Sequence[str]) -> int:
    """A class index from an index or a class name; ValueError naming ``target`` otherwise."""
    if isinstance(value, str) and value in classes:
        return list(classes).index(value)
    if isinstance(value, int) and 0 <= value < len(classes):
        return value
    raise ValueError(f"target: class {value} is not a class of the model; allowed: 0-{len(classes) - 1} or "
                     f"{', '.join(classes)}")


def parse_target(value: object) -> Target:
    """A :class:`Target` from its YAML/CLI form.

    Args:
        value: ``"least_likely"``, ``"random"``, ``"class:K"`` (``K`` an index or a name),
            ``{"class": K}`` or ``{"map": {from: to, ...}}``.

    Returns:
        The parsed target (class names are checked against a model by :meth:`Target.check`).

    Raises:
        ValueError: any other form (the message names ``target`` and the allowed forms).

    Example:
        >>> parse_target("class:2"), parse_target("class:tumour").cls
        (Target(kind='class', cls=2, mapping=(), pattern=''), 'tumour')
    """
    if isinstance(value, str):
        kind, _, arg = value.partition(":")
        if kind in ("least_likely", "random") and not arg:
            return Target(kind)
        if kind == "class" and arg:
            return Target("class", cls=int(arg) if arg.lstrip("-").isdigit() else arg)
    elif isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "class" and isinstance(arg, (int, str)):
            return parse_target(f"class:{arg}")
        if kind == "map" and isinstance(arg, dict) and arg:
            pairs = tuple((_name_or_index(a), _name_or_index(b)) for a, b in arg.items())
            return Target("map", mapping=pairs)
        if kind == "labels" and isinstance(arg, str) and arg:
            return Target("labels", pattern=arg)
    raise ValueError(f"target: got {value!r}; allowed: {TARGET_FORMS}")


def _target_file(pattern: str, case_id: str, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The per-case target label map of ``pattern`` (``{id}`` = the case's safe name), in ``y``'s shape."""
    from medrobust.evaluation.case_files import read_case_map

    data, path = read_case_map(pattern, case_id, tuple(y.shape[2:]), "target: label file")
    target = torch.as_tensor(data).round().long().reshape(y.shape).to(y.device)
    if target.min() < 0 or target.max() >= num_classes:
        raise ValueError(f"target: label file {path} has values outside [0, {num_classes})")
    return target


def _name_or_index(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"target: map classes are names or indices, got {value!r}")
    return int(value) if isinstance(value, str) and value.isdigit() else value
