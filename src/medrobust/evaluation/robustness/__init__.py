"""Robustness summaries derived from the results store's dataframe (design.md section 7).

Every function takes the ``runs`` dataframe of :meth:`ResultStore.to_dataframe` and
returns a small dataframe. The score is the store's ``clean_score`` / ``adv_score``
(mean foreground Dice in [0, 1], or 1/0 correct for a classifier, so means are accuracies).

Budgets are only compared within one **budget group** ``(norm, eps_unit)``: eps 4 in
1/255 and eps 4 in HU are different budgets. Within a group:

- attack curve: mean adv score over cases at each stated eps, with the clean point at
  eps = 0 (mean clean score over the same cases) prepended when 0 was not run;
- worst case over attacks: per case, the minimum adv score over every attack of the
  group at that eps (a classifier counts as misclassified if any attack succeeds), taken
  over the cases every attack of the group has finished, then averaged;
- normalised AUC: ``AUC = 1/(eps_max - eps_min) * trapezoid(score, eps)`` over the stated
  eps range including the clean point eps = 0 (same units as the score; 1 = perfect and
  unaffected, equal to the score itself when only eps = 0 exists).

Corruption runs (``kind == "corruption"``, severity 1-5 in ``eps_stated``) have their own
summaries (curves over severity, relative corruption error CE_c and mCE); they never enter
the worst case over attacks.

This package re-exports every function and constant of its modules, so
``from medrobust.evaluation import robustness as rb; rb.attack_curves(df)`` reaches them all:

- :mod:`~medrobust.evaluation.robustness.curves`: attack curves, worst case over attacks, AUC;
- :mod:`~medrobust.evaluation.robustness.tables`: per-class scores and image quality;
- :mod:`~medrobust.evaluation.robustness.masking`: gradient-masking checks;
- :mod:`~medrobust.evaluation.robustness.headline`: the headline row per model;
- :mod:`~medrobust.evaluation.robustness.corruption`: corruption curves, CE_c and mCE.
"""
from __future__ import annotations

from medrobust.evaluation.robustness.corruption import (
    corruption_curves,
    corruption_errors,
    corruption_summary,
    corruptions_only,
)
from medrobust.evaluation.robustness.curves import (
    GROUP,
    attack_curves,
    attacks_only,
    auc_table,
    normalised_auc,
    worst_case_curve,
    worst_case_per_case,
)
from medrobust.evaluation.robustness.headline import headline, main_group
from medrobust.evaluation.robustness.masking import BLACK_BOX, NOISE, TOLERANCE, masking_checks
from medrobust.evaluation.robustness.tables import per_class_table, quality_table

__all__ = ["BLACK_BOX", "GROUP", "NOISE", "TOLERANCE", "attack_curves", "attacks_only", "auc_table",
           "corruption_curves", "corruption_errors", "corruption_summary", "corruptions_only", "headline",
           "main_group", "masking_checks", "normalised_auc", "per_class_table", "quality_table",
           "worst_case_curve", "worst_case_per_case"]
