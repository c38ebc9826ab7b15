"""medrobust.attacks: voxel-domain attacks in the units clinicians use (design.md section 5).

``PGD(budget, steps=20, loss="dice_ce")(model, x, y)``; ``attack.run(...)`` also gives the
loss history and the best loss per sample. ``get_attack(name, budget, **options)`` builds
one by name (``attack_names()`` lists them, ``register_attack`` adds one);
``gradient_masking_check`` runs the sanity checks for gradient masking.
"""
from __future__ import annotations

from medrobust.attacks.apgd import APGD
from medrobust.attacks.autoattack import APGDT, FAB, FABT, autoattack  # registers apgd-t, fab, fab-t, autoattack
from medrobust.attacks.base import Attack, AttackResult, AttackState
from medrobust.attacks.blackbox import Square
from medrobust.attacks.checks import MaskingReport, gradient_masking_check
from medrobust.attacks.ensemble import AttackEnsemble
from medrobust.attacks.frequency import VAFA  # registers vafa2d and vafa3d
from medrobust.attacks.gradient import BIM, FGSM, MIFGSM, PGD
from medrobust.attacks.noise import GaussianNoise
from medrobust.attacks.registry import (
    attack_budget_kind,
    attack_names,
    attack_norms,
    attack_task,
    get_attack,
    register_attack,
)
from medrobust.attacks.seg_ensemble import seg_ensemble  # registers seg-ensemble, padam-ce, padam-cos

__all__ = ["Attack", "AttackResult", "AttackState", "FGSM", "BIM", "PGD", "MIFGSM", "APGD", "APGDT", "FAB", "FABT",
           "autoattack", "Square",
           "GaussianNoise", "VAFA", "AttackEnsemble", "attack_budget_kind", "attack_names", "attack_norms",
           "attack_task", "get_attack", "register_attack", "MaskingReport", "gradient_masking_check",
           "seg_ensemble"]

