"""Re-measure the seeds' claims (issue 19): ``medrobust reproduce``.

:mod:`~medrobust.reproduce.claims` (what a claim gets and returns, the registry),
:mod:`~medrobust.reproduce.verdict` (effect, bootstrap interval, rule),
:mod:`~medrobust.reproduce.page` (``reproduction.html``), :mod:`~medrobust.reproduce.run`;
one module per claim registers itself when imported here.
"""
from __future__ import annotations

from medrobust.reproduce import (  # noqa: F401  (each registers its claim)
    claim_assimilation,
    claim_cooperative,
    claim_ensemble,
    claim_pgd_overstates,
    claim_self_adaptive,
    claim_vafa,
    claim_vaft,
)
from medrobust.reproduce.claims import CLAIMS, ClaimContext, ClaimResult
from medrobust.reproduce.run import reproduce

__all__ = ["CLAIMS", "ClaimContext", "ClaimResult", "reproduce"]
