"""The ``autoattack`` preset for classifiers, and its members by name.

AutoAttack's "standard" version (Croce & Hein 2020, github.com/fra31/auto-attack).

``autoattack`` is an :class:`~medrobust.attacks.ensemble.AttackEnsemble` of, in order,
APGD-CE (100 steps), APGD-T (100 steps, 9 targets), FAB-T (100 steps, 9 targets) and
Square (5000 queries, p_init 0.8), each run only on the samples still classified
correctly. The L2 preset leaves Square out (medrobust's Square is Linf only; the reference
runs an L2 Square there). Importing this module registers ``autoattack``, ``apgd-t``,
``fab`` and ``fab-t`` (classification only).
"""
from __future__ import annotations

from medrobust.attacks.apgd import APGD
from medrobust.attacks.apgd_targeted import APGDT
from medrobust.attacks.base import Attack
from medrobust.attacks.blackbox import Square
from medrobust.attacks.ensemble import AttackEnsemble
from medrobust.attacks.fab import FAB, FABT
from medrobust.attacks.registry import register_attack
from medrobust.units import Budget

__all__ = ["APGDT", "FAB", "FABT", "autoattack"]


def autoattack(budget: Budget, *, steps: int = 100, n_targets: int = 9, n_queries: int = 5000,
               seed: int | None = 0) -> AttackEnsemble:
    """AutoAttack "standard": APGD-CE, APGD-T, FAB-T and (Linf) Square on the still-robust samples.

    Args:
        budget: the threat model, Linf or L2.
        steps: steps of APGD-CE, APGD-T (per target) and FAB-T (per target); 100 in the
            reference. Fewer for a short run (say so in the report).
        n_targets: target classes of APGD-T and FAB-T (9; at most K - 1 are used).
        n_queries: Square's queries (5000; Linf only).
        seed: seeds every member's random draws.

    Returns:
        The ensemble; ``describe()`` names the members with their steps.

    Raises:
        ValueError: a budget norm other than Linf/L2, or bad member options.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)`` class labels; output as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import get_attack
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> attack = get_attack("autoattack", Budget.linf(0.02, valid_range=(0.0, 1.0)), steps=5, n_queries=20)
        >>> [(name, member.steps) for name, member in attack.members]
        [('apgd-ce', 5), ('apgd-t', 5), ('fab-t', 5), ('square', 20)]
        >>> attack.run(model, x, y).metric.shape
        torch.Size([4])
    """
    members: list[tuple[str, Attack]] = [
        ("apgd-ce", APGD(budget, steps=steps, loss="ce", seed=seed)),
        ("apgd-t", APGDT(budget, steps=steps, n_targets=n_targets, seed=seed)),
        ("fab-t", FABT(budget, steps=steps, n_targets=n_targets, seed=seed)),
    ]
    if budget.norm == "linf":
        members.append(("square", Square(budget, n_queries=n_queries, p_init=0.8, seed=seed)))
    return AttackEnsemble(budget, members)


register_attack("apgd-t", task="classification")(APGDT)
register_attack("fab", task="classification")(FAB)
register_attack("fab-t", task="classification")(FABT)
register_attack("autoattack", norms=("linf", "l2"), task="classification")(autoattack)
