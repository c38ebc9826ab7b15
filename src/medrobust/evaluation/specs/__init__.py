"""The entries of an evaluation grid: models, data and perturbations (attacks, corruptions, certification).

:class:`~medrobust.evaluation.config.GridConfig` holds lists of these; each is a strict
pydantic model (unknown keys are errors) whose validators name the key and the allowed
values. Relative paths resolve against the grid file's folder (the ``base`` of the
validation context).

- :mod:`~medrobust.evaluation.specs.base`: the strict base model and ``resolve_path``.
- :mod:`~medrobust.evaluation.specs.inputs`: ``ModelSpec`` and ``DataSpec``.
- :mod:`~medrobust.evaluation.specs.attack`: ``AttackSpec``.
- :mod:`~medrobust.evaluation.specs.perturbations`: ``CorruptionSpec``, ``CertifySpec`` and
  ``Perturbation`` (any perturbation entry).
"""
from __future__ import annotations

from medrobust.evaluation.specs.attack import AttackSpec
from medrobust.evaluation.specs.base import resolve_path
from medrobust.evaluation.specs.inputs import MODEL_SOURCES, DataSpec, ModelSpec
from medrobust.evaluation.specs.perturbations import CertifySpec, CorruptionSpec, Perturbation

__all__ = ["MODEL_SOURCES", "AttackSpec", "CertifySpec", "CorruptionSpec", "DataSpec", "ModelSpec", "Perturbation",
           "resolve_path"]

