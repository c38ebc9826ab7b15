"""Attacks by name: ``get_attack(name, budget, **options)``, ``attack_names()``, ``register_attack``.

Generic options from a command line or a grid (``steps``, ``restarts``, ``loss``,
``step_size``) are translated where an attack has no such knob: Square reads ``steps`` as
``n_queries``; FGSM ignores ``steps``/``step_size`` (one step of size eps); Gaussian noise
ignores ``steps``/``step_size``/``restarts``. Other unknown options raise ValueError.

Names are case-insensitive (stored lower-case) and read at call time: an attack added with
``@register_attack("name")`` is accepted by ``get_attack``, the grid and the CLI. Each entry
records the budget norms it accepts: ``("linf", "l2")`` for voxel attacks (the default),
``("linf",)`` for Square, ``("dct",)`` for the frequency attacks of attacks/frequency/
(VAFA, whose budget is ``q_max``); :func:`attack_budget_kind` tells the two kinds apart.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from medrobust.attacks.apgd import APGD
from medrobust.attacks.base import Attack
from medrobust.attacks.blackbox import Square
from medrobust.attacks.gradient import BIM, FGSM, MIFGSM, PGD
from medrobust.attacks.noise import GaussianNoise
from medrobust.registry import Registry
from medrobust.units import NORMS, Budget

__all__ = ["FREQUENCY_NORM", "attack_budget_kind", "attack_names", "attack_norms", "attack_task", "get_attack",
           "register_attack"]

Task = Literal["classification", "segmentation"]

Factory = Callable[..., Attack]
FREQUENCY_NORM = "dct"  # the budget of frequency attacks: eps is q_max in 1/255 of the valid range
_ATTACKS: Registry[Factory] = Registry("attack")


def register_attack(name: str, *, norms: Sequence[str] = NORMS, task: Task | None = None,
                    replace: bool = False) -> Callable[[Factory], Factory]:
    """Decorator adding ``factory(budget, **options) -> Attack`` under ``name``.

    Args:
        name: the attack's name (case-insensitive; stored lower-case).
        norms: the budget norms it accepts: a subset of ``("linf", "l2")`` for a voxel
            attack, or ``("dct",)`` for a frequency attack (its factory gets ``q_max=``).
        task: ``"classification"`` or ``"segmentation"`` when the attack is for one task
            only (the ``autoattack`` and ``seg-ensemble`` presets); None: both.
        replace: allow replacing another factory registered under ``name``.

    Returns:
        A decorator registering the factory (an Attack subclass works) and returning it.

    Raises:
        ValueError: ``name`` is taken by another factory (and not ``replace``), or
            ``norms`` is empty, unknown or mixes ``"dct"`` with voxel norms.

    A new attack is any ``factory(budget, **options) -> Attack``, e.g. a subclass::

        @register_attack("shift", norms=("linf",))
        class Shift(Attack): ...

    Example:
        >>> from medrobust.attacks import FGSM, PGD
        >>> from medrobust.attacks.registry import register_attack
        >>> register_attack("PGD")(PGD) is PGD  # the same object again: no change
        True
        >>> register_attack("pgd")(FGSM)
        Traceback (most recent call last):
            ...
        ValueError: attack 'pgd' is already registered
        >>> register_attack("pgd-l1", norms=("l1",))
        Traceback (most recent call last):
            ...
        ValueError: norms: give a subset of ('linf', 'l2') or ('dct',), got ('l1',)
    """
    norms = tuple(norms)
    voxel = bool(norms) and set(norms) <= set(NORMS)
    if not (voxel or norms == (FREQUENCY_NORM,)):
        raise ValueError(f"norms: give a subset of {NORMS} or ({FREQUENCY_NORM!r},), got {norms!r}")
    if task not in (None, "classification", "segmentation"):
        raise ValueError(f"task: 'classification', 'segmentation' or None, got {task!r}")
    return _ATTACKS.register(name.lower(), replace=replace, norms=norms, task=task)


def attack_task(name: str) -> Task | None:
    """The one task attack ``name`` is for, or None when it attacks both.

    Args:
        name: a registered attack name (case-insensitive).

    Returns:
        ``"classification"``, ``"segmentation"`` or None.

    Raises:
        ValueError: unknown name.

    Example:
        >>> from medrobust.attacks.registry import attack_task
        >>> attack_task("pgd") is None
        True
    """
    task: Task | None = _ATTACKS.info(name.lower()).get("task")
    return task


def attack_names() -> tuple[str, ...]:
    """The registered attack names, read now (attacks registered later show up).

    Returns:
        The names :func:`get_attack` accepts, built-ins first.

    Example:
        >>> from medrobust.attacks.registry import attack_names
        >>> attack_names()[:3], "vafa3d" in attack_names()
        (('fgsm', 'bim', 'pgd'), True)
    """
    return _ATTACKS.names()


def attack_norms(name: str) -> tuple[str, ...]:
    """The budget norms attack ``name`` accepts.

    Args:
        name: a registered attack name (case-insensitive).

    Returns:
        E.g. ``("linf", "l2")`` for PGD, ``("linf",)`` for Square, ``("dct",)`` for VAFA.

    Raises:
        ValueError: unknown name (the message lists the allowed ones).

    Example:
        >>> from medrobust.attacks.registry import attack_norms
        >>> attack_norms("pgd"), attack_norms("square"), attack_norms("vafa2d")
        (('linf', 'l2'), ('linf',), ('dct',))
    """
    return tuple(_ATTACKS.info(name.lower())["norms"])


def attack_budget_kind(name: str) -> Literal["voxel", "dct"]:
    """``"dct"`` for a frequency attack (its budget is ``q_max``), else ``"voxel"``.

    Args:
        name: a registered attack name (case-insensitive).

    Returns:
        ``"voxel"`` (an L-inf/L2 budget in voxel intensities) or ``"dct"``.

    Raises:
        ValueError: unknown name.

    Example:
        >>> from medrobust.attacks.registry import attack_budget_kind
        >>> attack_budget_kind("VAFA3D"), attack_budget_kind("apgd-ce")
        ('dct', 'voxel')
    """
    return "dct" if attack_norms(name) == (FREQUENCY_NORM,) else "voxel"


def get_attack(name: str, budget: Budget, **options: Any) -> Attack:
    """The attack ``name`` configured with ``budget`` and keyword ``options``.

    Args:
        name: one of :func:`attack_names` (case-insensitive).
        budget: the perturbation budget (frequency attacks take ``q_max=`` in ``options``
            and use only the budget's valid range).
        **options: keyword options of the attack class (``steps``, ``loss``, ...).

    Returns:
        The configured :class:`~medrobust.attacks.base.Attack`.

    Raises:
        ValueError: unknown name (the message lists the allowed ones) or an option the
            attack does not have.

    Example:
        >>> from medrobust.attacks.registry import get_attack
        >>> from medrobust.units import Budget
        >>> attack = get_attack("PGD", Budget.linf(0.03), steps=2)
        >>> type(attack).__name__, attack.steps
        ('PGD', 2)
        >>> get_attack("pgd", Budget.linf(0.03), stepz=2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: attack 'pgd': ...stepz...
    """
    factory = _ATTACKS[name.lower() if isinstance(name, str) else name]
    try:
        return factory(budget, **options)
    except TypeError as err:  # an option the attack does not have
        raise ValueError(f"attack {name!r}: {err}") from err


def _drop(options: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in keys}


def _apgd_with(loss: str) -> Factory:
    def make(budget: Budget, **options: Any) -> Attack:
        if options.setdefault("loss", loss) != loss:
            raise ValueError(f"loss: apgd-{loss} uses the {loss!r} loss, got {options['loss']!r}; use 'apgd' to choose")
        return APGD(budget, **options)
    return make


def _fgsm(budget: Budget, **options: Any) -> Attack:
    return FGSM(budget, **_drop(options, "steps", "step_size"))


def _square(budget: Budget, **options: Any) -> Attack:
    if "steps" in options:
        options.setdefault("n_queries", options.pop("steps"))
    return Square(budget, **_drop(options, "step_size"))


def _gaussian(budget: Budget, **options: Any) -> Attack:
    return GaussianNoise(budget, **_drop(options, "steps", "step_size", "restarts"))


register_attack("fgsm")(_fgsm)
register_attack("bim")(BIM)
register_attack("pgd")(PGD)
register_attack("mifgsm")(MIFGSM)
register_attack("apgd")(APGD)
register_attack("apgd-ce")(_apgd_with("ce"))
register_attack("apgd-dlr")(_apgd_with("dlr"))
register_attack("square", norms=("linf",))(_square)
register_attack("gaussian")(_gaussian)
