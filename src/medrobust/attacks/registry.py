"""Attacks by name: ``get_attack(name, budget, **options)`` and ``ATTACK_NAMES``.

Generic options from a command line or a grid (``steps``, ``restarts``, ``loss``,
``step_size``) are translated where an attack has no such knob: Square reads ``steps`` as
``n_queries``; FGSM ignores ``steps``/``step_size`` (one step of size eps); Gaussian noise
ignores ``steps``/``step_size``/``restarts``. Other unknown options raise ValueError.

Frequency attacks live in attacks/frequency.py and register themselves with
``@register_attack("vafa3d")``; that module is imported on first use of such a name.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from medrobust.attacks.apgd import APGD
from medrobust.attacks.base import Attack
from medrobust.attacks.blackbox import Square
from medrobust.attacks.gradient import BIM, FGSM, MIFGSM, PGD
from medrobust.attacks.noise import GaussianNoise
from medrobust.units import Budget

__all__ = ["ATTACK_NAMES", "get_attack", "register_attack"]

Factory = Callable[..., Attack]
_LAZY = {"vafa2d": "medrobust.attacks.frequency", "vafa3d": "medrobust.attacks.frequency"}


def _drop(options: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in keys}


def _apgd_with(loss: str) -> Factory:
    def make(budget: Budget, **options: Any) -> Attack:
        if options.setdefault("loss", loss) != loss:
            raise ValueError(f"loss: apgd-{loss} uses the {loss!r} loss, got {options['loss']!r}; use 'apgd' to choose")
        return APGD(budget, **options)
    return make


def _square(budget: Budget, **options: Any) -> Attack:
    if "steps" in options:
        options.setdefault("n_queries", options.pop("steps"))
    return Square(budget, **_drop(options, "step_size"))


_REGISTRY: dict[str, Factory] = {
    "fgsm": lambda budget, **o: FGSM(budget, **_drop(o, "steps", "step_size")),
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "apgd": APGD,
    "apgd-ce": _apgd_with("ce"),
    "apgd-dlr": _apgd_with("dlr"),
    "square": _square,
    "gaussian": lambda budget, **o: GaussianNoise(budget, **_drop(o, "steps", "step_size", "restarts")),
}
ATTACK_NAMES: tuple[str, ...] = tuple(_REGISTRY) + tuple(n for n in _LAZY if n not in _REGISTRY)


def register_attack(name: str) -> Callable[[Factory], Factory]:
    """Decorator adding ``factory(budget, **options) -> Attack`` under ``name``."""
    def add(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory
    return add


def get_attack(name: str, budget: Budget, **options: Any) -> Attack:
    """The attack ``name`` (one of ``ATTACK_NAMES``, case-insensitive) configured with
    ``budget`` and keyword ``options`` (see each class)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY and key in _LAZY:
        try:
            importlib.import_module(_LAZY[key])
        except ImportError as err:
            raise ValueError(f"attack {name!r} is not available: {err}") from err
    if key not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(ATTACK_NAMES)}")
    try:
        return _REGISTRY[key](budget, **options)
    except TypeError as err:  # an option the attack does not have
        raise ValueError(f"attack {name!r}: {err}") from err
