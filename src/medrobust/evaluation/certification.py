"""One certification run of a grid: a case certified by randomized smoothing at one sigma.

The row's score is the certified accuracy (classifier) or the mean certified Dice
(segmenter, abstained voxels wrong) at radius 0; ``options_json`` keeps the whole curve
over the entry's radii, the abstain rate and the settings, so that the report can draw
certified robustness (a lower bound) beside the empirical L2 worst case (an upper bound).
"""
from __future__ import annotations

import json
import time

from medrobust.certify import ClassCertificate, SegCertificate, Smoothed
from medrobust.evaluation.specs import CertifySpec
from medrobust.evaluation.types import Case, LoadedModel, Row, RunSettings

__all__ = ["certify_row"]


def certified_curve(cert: ClassCertificate | SegCertificate, case: Case, radii: list[float],
                    classes: list[str]) -> tuple[list[float], float]:
    """(certified score at each radius, abstain rate) of one case.

    Args:
        cert: the case's certificate.
        case: the case (its true label ``y``).
        radii: radii in the certificate's unit.
        classes: the model's class names.

    Returns:
        Scores in [0, 1] per radius, and the fraction of abstentions (voxels, or 0/1).
    """
    if isinstance(cert, ClassCertificate):
        label = int(case.y[0])
        return [float(cert.certified_correct(label, r)) for r in radii], float(cert.abstained)
    records = cert.summary(case.y[0, 0], radii, classes)
    return [float(r["mean_certified_dice"]) for r in records], float(records[0]["abstain_rate"])


def certify_row(lm: LoadedModel, spec: CertifySpec, sigma: float, case: Case, settings: RunSettings,
                seed: int) -> Row:
    """Certify one case at noise level ``sigma`` and make its store row.

    Args:
        lm: the model.
        spec: the certification entry.
        sigma: one of its noise levels, in ``spec.unit``.
        case: the prepared case.
        settings: the run's settings (config hash).
        seed: the run's seed (the noise is drawn from it).

    Returns:
        The :class:`~medrobust.evaluation.types.Row` (``kind = "certification"``).
    """
    t0 = time.perf_counter()
    smoothed = Smoothed(case.model, sigma, spec.unit, case.imap, seed=seed % (2**31))
    cert = smoothed.certify(case.x, spec.n0, spec.n, spec.alpha, tau=spec.tau, correction=spec.correction)
    radii = spec.radii_for(sigma)
    curve, abstain = certified_curve(cert, case, radii, lm.classes)
    details = {"radii": radii, "certified": curve, "abstain_rate": abstain, "n0": spec.n0, "n": spec.n,
               "alpha": spec.alpha, "tau": spec.tau, "correction": cert.correction if isinstance(cert, SegCertificate)
               else None, "sigma_model": smoothed.sigma_model(case.x)}
    seconds = time.perf_counter() - t0
    return Row(config_hash=settings.config_hash, model=lm.name, perturbation=spec.label, kind="certification",
               attack=f"certify-{spec.certify}", eps_stated=float(sigma), eps_unit=spec.unit, case_id=case.id,
               task=lm.task, score_name="dice_mean" if case.segmentation else "accuracy",
               clean_score=case.clean.score, adv_score=curve[0], norm="l2",
               options_json=json.dumps(details, sort_keys=True), attack_seconds=seconds, seconds=seconds,
               method=f"randomized smoothing, sigma {sigma:g} {spec.unit}, n0 {spec.n0}, n {spec.n}, "
                      f"alpha {spec.alpha:g}" + (f", tau {spec.tau:g}" if spec.tau is not None else ""))
