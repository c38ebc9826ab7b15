"""The ``autoattack`` preset: AutoAttack's "standard" version, against torchattacks.AutoAttack
on a small trained classifier, and its members, options and registration."""
from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from torch import nn

from medrobust.attacks import APGD, APGDT, FABT, Square, attack_norms, attack_task, get_attack
from medrobust.units import Budget
from tests.attacks.test_fab import blobs_classifier, robust_count

STEPS, QUERIES = 50, 1000  # shortened in both (the reference: 100 steps, 5000 queries)


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.08), ("l2", 0.12)])
def test_autoattack_robust_accuracy_at_most_torchattacks(norm: str, eps: float) -> None:
    model, x, y = blobs_classifier()
    budget = Budget.linf(eps, valid_range=(0.0, 1.0)) if norm == "linf" else Budget.l2(eps, valid_range=(0.0, 1.0))
    ours = get_attack("autoattack", budget, steps=STEPS, n_queries=QUERIES).run(model, x, y)
    reference = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                                        n_classes=4, seed=0)
    members = reference._autoattack.attacks                # APGD, APGDT, FAB (multi-targeted), Square
    for member in members[:3]:
        member.steps = STEPS
    members[3].n_queries = QUERIES
    if norm == "l2":  # ours has no L2 Square; torchattacks' fails on a 1x2 image (side 0)
        del members[3]
    theirs = reference(x, y)
    n_ours, n_theirs = robust_count(model, ours.x_adv, x, y, eps, norm), robust_count(model, theirs, x, y, eps, norm)
    clean = int((model(x).argmax(1) == y).sum())
    print(f"autoattack {norm} eps={eps}: clean {clean}, ours {n_ours}, torchattacks {n_theirs} of {len(y)}")
    assert n_ours <= n_theirs + 1
    assert n_ours < clean
    assert int(ours.metric.sum()) == n_ours                 # the reported outcome is the returned images'


def test_members_follow_the_standard_version() -> None:
    linf = get_attack("autoattack", Budget.linf(0.03, valid_range=(0.0, 1.0)))
    assert [n for n, _ in linf.members] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd, apgd_t, fab_t, square = (a for _, a in linf.members)
    assert type(apgd) is APGD and apgd.loss_name == "ce" and apgd.steps == 100 and apgd.restarts == 1
    assert type(apgd_t) is APGDT and apgd_t.steps == 100 and apgd_t.n_targets == 9
    assert type(fab_t) is FABT and fab_t.steps == 100 and fab_t.n_targets == 9
    assert type(square) is Square and square.steps == 5000 and square.p_init == 0.8
    assert linf.only_robust
    l2 = get_attack("autoattack", Budget.l2(0.5, valid_range=(0.0, 1.0)), steps=7, n_queries=10, n_targets=2)
    assert "apgd-ce (7 steps), apgd-t (7 steps), fab-t (7 steps)" in l2.describe() and "square" not in l2.describe()
    assert all(a.n_targets == 2 for n, a in l2.members if n != "apgd-ce")
    assert attack_task("autoattack") == "classification" and attack_norms("autoattack") == ("linf", "l2")
    assert {attack_task(n) for n in ("apgd-t", "fab", "fab-t")} == {"classification"}
    with pytest.raises(ValueError, match="restarts"):
        get_attack("autoattack", Budget.linf(0.03), restarts=2)


def test_each_member_attacks_only_the_samples_still_robust() -> None:
    model, x, y = blobs_classifier()
    budget = Budget.linf(0.08, valid_range=(0.0, 1.0))
    result = get_attack("autoattack", budget, steps=10, n_queries=50).run(model, x, y)
    ran = {name: ~result.extra[f"metric_{name}"].isnan() for name in ("apgd-ce", "apgd-t", "fab-t", "square")}
    assert ran["apgd-ce"].all()
    fooled_so_far = result.extra["metric_apgd-ce"] == 0
    for name in ("apgd-t", "fab-t", "square"):
        assert torch.equal(ran[name], ~fooled_so_far), name
        fooled_so_far |= result.extra[f"metric_{name}"] == 0
    assert torch.equal(result.metric == 0, fooled_so_far)
    member = result.extra["member"]
    assert not math.isnan(float(member.sum())) and set(member.tolist()) <= {-1.0, 0.0, 1.0, 2.0, 3.0}


def test_autoattack_refuses_segmentation() -> None:
    attack = get_attack("autoattack", Budget.linf(0.03, valid_range=(0.0, 1.0)), steps=2, n_queries=2)
    with pytest.raises(ValueError, match="classifiers"):
        attack.run(nn.Conv2d(1, 3, 1), torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))
